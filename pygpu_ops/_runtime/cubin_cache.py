"""A disk cache of the kernels NVRTC compiled, so a second process loads them instead of compiling.

Why: CuPy before 14.2 skips its own disk cache for a ``RawModule`` built with
``name_expressions`` (it needs NVRTC's lowered names, which that cache did not store), so every
process (pytest, selftest, bench) recompiled every module: 32 modules, 28-29 s with NVRTC 12.9
at sm_90 (CuPy 13.6 and 14.2); loading them all from this cache takes about 10 ms.

How: a module is compiled the way ``cupy.RawModule(code=..., options=...,
name_expressions=...)`` compiles it, with CuPy's own NVRTC and CuPy's own option assembly
(``cupy._core.core.assemble_cupy_compiler_options``, then ``-ftz=true`` and, in CuPy 13 and
14.0/14.1, the extra include directories, then ``cupy.cuda.compiler.compile_using_nvrtc``, which
adds ``-arch=sm_XX`` (a cubin) when this NVRTC knows the device's architecture, else
``-arch=compute_XX`` (PTX, finished by the driver) and ``--device-as-default-execution-space``).
The binary goes to ``<key>.cubin`` (or ``.ptx``) and NVRTC's lowered names, with the binary's
SHA-256 and size, to ``<key>.json``; both are written to a temporary file and renamed into place
(``os.replace``), the JSON last, so a reader sees whole files or none. The key is a SHA-256 of
the source text, the final options, the name expressions, the NVRTC version, the architecture
option and CuPy's version. A later process loads the binary with ``cupy.RawModule(path=...)``
and looks kernels up by their lowered names. An entry whose JSON does not parse, lacks a name or
whose binary does not match its hash (a truncated or corrupt file) is compiled again and
rewritten.

Where: ``$PYGPU_OPS_CUBIN_CACHE`` if set to a directory, else ``$PYGPU_OPS_CACHE_DIR/cubin``,
else ``$XDG_CACHE_HOME/pygpu_ops/cubin``, else ``~/.cache/pygpu_ops/cubin``.
``PYGPU_OPS_CUBIN_CACHE=0`` turns it off (plain ``RawModule(code=...)``, CuPy's own caching).
Deleting the directory clears it (`clear` does that for this package's files).

If this CuPy lacks one of the internals used here, the cache warns once and falls back to the
plain ``RawModule(code=..., name_expressions=...)``.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import threading
import warnings
import weakref
from pathlib import Path
from typing import Dict, Optional, Tuple

ENV = "PYGPU_OPS_CUBIN_CACHE"
#: Bump when the file layout or the way options are assembled changes.
FORMAT = 1
_OFF = ("0", "off", "false", "no")

#: Compiles and loads in this process (tests read them): NVRTC compiles, cache hits, rewrites.
stats = {"compiled": 0, "loaded": 0, "rejected": 0}
_warned = False
_warn_lock = threading.Lock()


class CacheUnavailable(RuntimeError):
    """This CuPy lacks an internal the cache compiles with."""


def cache_dir(create: bool = True) -> Optional[Path]:
    """The directory of compiled kernels, or None when ``PYGPU_OPS_CUBIN_CACHE=0`` turns it off."""
    env = os.environ.get(ENV, "").strip()
    if env.lower() in _OFF:
        return None
    if env:
        d = Path(env).expanduser()
    elif os.environ.get("PYGPU_OPS_CACHE_DIR"):
        d = Path(os.environ["PYGPU_OPS_CACHE_DIR"]) / "cubin"
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = Path(xdg) / "pygpu_ops" / "cubin"
    if create:
        try:
            d.mkdir(parents=True, exist_ok=True)
        except OSError:
            if env or os.environ.get("PYGPU_OPS_CACHE_DIR"):
                raise
            # e.g. a read-only home directory (as the emulator's cache does)
            d = Path(tempfile.gettempdir()) / f"pygpu_ops-{os.getuid()}" / "cubin"
            d.mkdir(parents=True, exist_ok=True)
    return d


def describe() -> str:
    """One line for ``pygpu-ops info``: where the cache is, or that it is off."""
    d = cache_dir(create=False)
    if d is None:
        return f"off ({ENV}={os.environ.get(ENV)})"
    n = len(list(d.glob("*.json"))) if d.is_dir() else 0
    return f"{d} ({n} modules; clear with: rm -r {d})"


def clear() -> int:
    """Delete this package's cached kernels; returns the number of files removed."""
    d = cache_dir(create=False)
    if d is None or not d.is_dir():
        return 0
    n = 0
    for p in d.iterdir():
        if p.suffix in (".json", ".cubin", ".ptx") or p.name.startswith(".tmp-"):
            p.unlink(missing_ok=True)
            n += 1
    return n


# ---------------------------------------------------------------------------------------------
# CuPy's compiler, as RawModule uses it
# ---------------------------------------------------------------------------------------------
class _Toolchain:
    """The CuPy internals a ``RawModule(code=...)`` compile goes through, found once per CuPy."""

    def __init__(self, cupy) -> None:
        try:
            from_core = cupy._core.core
            compiler = cupy.cuda.compiler
            self.assemble = from_core.assemble_cupy_compiler_options
            self.nvrtc_version = compiler._get_nvrtc_version
            self.get_arch = compiler._get_arch
            self.arch_option = compiler._get_arch_for_options_for_nvrtc
            self.compile_using_nvrtc = compiler.compile_using_nvrtc
        except (AttributeError, ImportError) as exc:
            raise CacheUnavailable(f"CuPy {getattr(cupy, '__version__', '?')} lacks {exc}") from None
        # CuPy 13 and 14.0/14.1 add the CUDA wheels' include directories here; 14.2 does not.
        self.extra_includes = getattr(compiler, "_get_extra_include_dir_opts", lambda: ())
        self.env_flag = getattr(compiler, "_get_bool_env_variable",
                                lambda name, default: os.environ.get(name, "") == "1")

    def options(self, options: Tuple[str, ...]) -> Tuple[str, ...]:
        """The options CuPy's ``_compile_with_cache_cuda`` hands ``compile_using_nvrtc``."""
        opts = tuple(self.assemble(tuple(options))) + ("-ftz=true",)
        if self.env_flag("CUPY_CUDA_COMPILE_WITH_DEBUG", False):
            opts += ("--device-debug", "--generate-line-info")
        return opts + tuple(self.extra_includes())


_toolchains: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _toolchain(cupy) -> _Toolchain:
    tc = _toolchains.get(cupy)
    if tc is None:
        tc = _toolchains[cupy] = _Toolchain(cupy)
    return tc


class CachedModule:
    """A module loaded from a cubin: ``get_function`` takes the name expression, as RawModule's.

    CuPy loads the file on the first ``get_function``. If the driver refuses it there (a
    ``CUDADriverError``: an image this driver cannot load, say), the module is compiled from
    source with ``from_source()`` instead, with one warning, so a run goes on; the bad entry is
    removed so the next process compiles it again."""

    def __init__(self, raw, names: Dict[str, str], path: Path, from_source=None) -> None:
        self.raw, self.names, self.path, self.from_source = raw, names, path, from_source
        self.plain = None

    def get_function(self, name_expression: str):
        if self.plain is not None:
            return self.plain.get_function(name_expression)
        try:
            # As RawModule: a name that is not one of the name expressions is taken as a symbol.
            return self.raw.get_function(self.names.get(name_expression, name_expression))
        except Exception as exc:
            if type(exc).__name__ != "CUDADriverError" or self.from_source is None:
                raise
            _warn_once(f"pygpu_ops: the driver refused the cached kernels {self.path} ({exc}); "
                       f"compiling them from source instead")
            for stale in (self.path, self.path.with_suffix(".json")):
                with contextlib.suppress(OSError):
                    stale.unlink()
            self.plain = self.from_source()
            return self.plain.get_function(name_expression)


def load_module(cupy, code: str, options: Tuple[str, ...], names: Tuple[str, ...], label: str = ""):
    """``cupy.RawModule(code=code, options=options, name_expressions=names)``, compiled at most
    once per key across processes (see the module docstring)."""
    try:
        d = cache_dir()
    except OSError as exc:
        _warn_once(f"pygpu_ops: the kernel cache is off: cannot create its directory ({exc})")
        d = None
    if d is None:
        return cupy.RawModule(code=code, options=options, name_expressions=names)
    try:
        tc = _toolchain(cupy)
        opts = tc.options(tuple(options))
        arch = tc.get_arch()
        arch_opt, method = tc.arch_option(arch)
        nvrtc = tuple(tc.nvrtc_version())
    except (CacheUnavailable, AttributeError, TypeError) as exc:  # TypeError: a changed signature
        _warn_once(f"pygpu_ops: the kernel cache is off ({exc}); every process compiles its kernels")
        return cupy.RawModule(code=code, options=options, name_expressions=names)
    def from_source():
        return cupy.RawModule(code=code, options=options, name_expressions=names)

    version = str(getattr(cupy, "__version__", "?"))
    key = _key(FORMAT, version, list(nvrtc), str(arch), arch_opt, method, list(opts), list(names), code)
    meta_path = d / f"{key}.json"
    bin_path = d / f"{key}.{'cubin' if method == 'cubin' else 'ptx'}"
    mapping = _read_entry(meta_path, bin_path, names)
    if mapping is not None:
        stats["loaded"] += 1
        return CachedModule(cupy.RawModule(path=str(bin_path)), mapping, bin_path, from_source)
    binary, mapping = tc.compile_using_nvrtc(code, opts, arch, f"{key}.cu", tuple(names))
    stats["compiled"] += 1
    mapping = {str(k): str(v) for k, v in (mapping or {}).items()}
    binary = binary.encode() if isinstance(binary, str) else bytes(binary)
    meta = {"format": FORMAT, "source": label, "cupy": version, "nvrtc": list(nvrtc),
            "arch": str(arch), "arch_option": arch_opt, "options": list(opts), "names": mapping,
            "binary": bin_path.name, "size": len(binary), "sha256": hashlib.sha256(binary).hexdigest()}
    try:
        _write_atomic(bin_path, binary)
        _write_atomic(meta_path, json.dumps(meta, indent=1).encode())
    except OSError as exc:
        # RawModule loads only from a file or from source: compile once more from source.
        _warn_once(f"pygpu_ops: cannot write the kernel cache in {d} ({exc}); set {ENV} to a "
                   f"writable directory, or to 0 to turn the cache off")
        return cupy.RawModule(code=code, options=options, name_expressions=names)
    return CachedModule(cupy.RawModule(path=str(bin_path)), mapping, bin_path, from_source)


def _key(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, separators=(",", ":")).encode()).hexdigest()[:40]


def _read_entry(meta_path: Path, bin_path: Path, names: Tuple[str, ...]) -> Optional[Dict[str, str]]:
    """The lowered names of a whole, intact entry; None when it is absent or damaged."""
    try:
        meta_text = meta_path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError:
        stats["rejected"] += 1
        return None
    try:
        meta = json.loads(meta_text)
        mapping = meta["names"]
        ok = (meta["format"] == FORMAT and meta["binary"] == bin_path.name and isinstance(mapping, dict)
              and all(isinstance(mapping.get(n), str) for n in names))
        if ok:
            binary = bin_path.read_bytes()
            ok = len(binary) == meta["size"] and hashlib.sha256(binary).hexdigest() == meta["sha256"]
    except (ValueError, KeyError, TypeError, OSError):
        ok = False
    if not ok:
        stats["rejected"] += 1
        return None
    return {n: mapping[n] for n in names}


def _write_atomic(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".tmp-", suffix=path.suffix)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise


def _warn_once(message: str) -> None:
    global _warned
    with _warn_lock:
        if _warned:
            return
        _warned = True
    warnings.warn(message, RuntimeWarning, stacklevel=4)
