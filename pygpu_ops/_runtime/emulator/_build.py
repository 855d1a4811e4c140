"""Compiling and caching the emulator's shared libraries.

Two kinds of libraries are built with g++ and cached on disk:

* the runtime (``rt-<hash>.so``: fiber scheduler, guarded memory, fault
  handling), loaded once per process with ``RTLD_GLOBAL``;
* one library per kernel module (``mod-<hash>.so``), whose undefined
  ``pygpuemu_*`` symbols resolve against the runtime.

The cache key covers everything that affects the binary: the source text,
quoted includes that are still present, the emulator's own C++ sources,
compiler flags, and the compiler version.  Libraries are compiled to a
temporary name and renamed into place under a file lock, so concurrent
processes (pytest-xdist workers) never see partial files.
"""

import ctypes
import fcntl
import functools
import hashlib
import json
import os
import platform
import shutil
import subprocess
import tempfile
import threading
from pathlib import Path

from ._errors import CompileError

CSRC = Path(__file__).resolve().parent / "csrc"
_CACHE_VERSION = "1"

#: Number of libraries compiled in this process (tests use it).
compile_count = 0
_count_lock = threading.Lock()


def cache_dir(name="emulator"):
    """The package's cache directory ``name`` (created if needed); by default the emulator's builds."""
    base = os.environ.get("PYGPU_OPS_CACHE_DIR")
    if base:
        d = Path(base) / name
    else:
        xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
        d = Path(xdg) / "pygpu_ops" / name
    try:
        d.mkdir(parents=True, exist_ok=True)
    except OSError:
        if base:
            raise
        # e.g. a read-only home directory
        d = Path(tempfile.gettempdir()) / f"pygpu_ops-{os.getuid()}" / name
        d.mkdir(parents=True, exist_ok=True)
    return d


def compiler():
    """The C++ compiler: $PYGPU_OPS_EMU_CXX, else $CXX, else g++."""
    return os.environ.get("PYGPU_OPS_EMU_CXX") or os.environ.get("CXX") or "g++"


@functools.lru_cache(maxsize=None)
def _compiler_version(cxx):
    exe = shutil.which(cxx)
    if exe is None:
        raise CompileError(f"the CUDA emulator needs a C++ compiler; {cxx!r} was not found "
                           "(install g++ or set PYGPU_OPS_EMU_CXX)")
    out = subprocess.run([exe, "--version"], capture_output=True, text=True)
    return exe + "\n" + out.stdout.strip()


def compiler_version():
    return _compiler_version(compiler())


@functools.lru_cache(maxsize=None)
def cpu_flags():
    """``-mfma`` when the CPU has FMA (GPUs contract a*b+c into an FMA)."""
    if platform.machine() not in ("x86_64", "AMD64"):
        return ()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return ("-mfma",) if " fma " in line + " " else ()
    except OSError:
        pass
    return ()


@functools.lru_cache(maxsize=None)
def emulator_sources_digest():
    """Hash of every file of the emulator's C++ side (prelude, runtime, stubs)."""
    h = hashlib.sha256()
    for p in sorted(CSRC.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(CSRC)).encode() + b"\0")
            h.update(p.read_bytes() + b"\0")
    return h.hexdigest()


def digest(*parts):
    h = hashlib.sha256()
    h.update(_CACHE_VERSION.encode() + b"\0")
    for p in parts:
        if isinstance(p, (list, tuple)):
            p = "\x1f".join(map(str, p))
        if isinstance(p, str):
            p = p.encode()
        h.update(p)
        h.update(b"\0\1\0")
    return h.hexdigest()[:40]


def _run_compiler(cmd, what):
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except OSError as e:
        raise CompileError(f"could not run the C++ compiler for {what}: {e}") from None
    if proc.returncode != 0:
        diag = (proc.stderr or "") + (proc.stdout or "")
        raise CompileError(f"g++ failed to compile {what}:\n{diag.strip()}\n"
                           f"(command: {' '.join(cmd)})")


def build(kind, key, source_text, flags, what, analyze=None, compile_only=(), folder="emulator"):
    """Returns the path of ``<kind>-<key>.so`` in the cache, compiling
    ``source_text`` with ``flags`` if it is not there yet.  With ``analyze``,
    the source is compiled to an object file first, ``analyze(object_path)``
    (a JSON-serializable result) is stored as ``<kind>-<key>.json`` next to
    the library (read it with :func:`analysis`), then the object is linked.
    ``compile_only`` flags are given to the compile step and not to the link
    (e.g. ``-fsanitize=thread``, whose hooks the runtime supplies). ``folder`` is the cache
    directory's name (`cache_dir`)."""
    global compile_count
    d = cache_dir(folder)
    so = d / f"{kind}-{key}.so"
    sidecar = d / f"{kind}-{key}.json"

    def done():  # the sidecar is written before the library is renamed into place
        return so.exists() and (analyze is None or sidecar.exists())

    if done():
        return so
    lock_path = d / f"{kind}-{key}.lock"
    with open(lock_path, "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if done():
                return so
            with _count_lock:
                compile_count += 1
            src = d / f"{kind}-{key}.cpp"
            fd, tmp_src = tempfile.mkstemp(prefix=f".{kind}-{key}.", suffix=".cpp", dir=d)
            with os.fdopen(fd, "w") as f:
                f.write(source_text)
            os.replace(tmp_src, src)
            fd, tmp_so = tempfile.mkstemp(prefix=f".{kind}-{key}.", suffix=".so", dir=d)
            os.close(fd)
            tmp_o = tmp_so[:-3] + ".o"
            try:
                try:
                    if analyze is None and not compile_only:
                        _run_compiler([compiler(), *flags, "-o", tmp_so, str(src)], what)
                    else:
                        _run_compiler([compiler(), *flags, *compile_only, "-c", "-o", tmp_o,
                                       str(src)], what)
                        if analyze is not None:
                            result = analyze(tmp_o)
                            fd, tmp_json = tempfile.mkstemp(prefix=f".{kind}-{key}.",
                                                            suffix=".json", dir=d)
                            with os.fdopen(fd, "w") as f:
                                json.dump(result, f)
                            os.replace(tmp_json, sidecar)
                        _run_compiler([compiler(), *flags, "-o", tmp_so, tmp_o], what)
                except CompileError:
                    src.unlink(missing_ok=True)
                    raise
                os.replace(tmp_so, so)
            finally:
                for p in (tmp_so, tmp_o):
                    if os.path.exists(p):
                        os.unlink(p)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
            try:
                os.unlink(lock_path)
            except OSError:
                pass
    return so


def analysis(so_path):
    """What ``analyze`` returned when ``so_path`` was built (see :func:`build`)."""
    with open(Path(so_path).with_suffix(".json")) as f:
        return json.load(f)


# ---------------------------------------------------------------------------
# The runtime library.
_rt = None
_rt_lock = threading.Lock()

_RUNTIME_FLAGS = ("-std=c++17", "-O2", "-fPIC", "-shared", "-fvisibility=hidden",
                  "-fdiagnostics-color=never")


class LaunchDesc(ctypes.Structure):
    _fields_ = [
        ("tramp", ctypes.c_void_p),
        ("args", ctypes.c_void_p),
        ("grid", ctypes.c_uint * 3),
        ("block", ctypes.c_uint * 3),
        ("dyn_smem", ctypes.c_ulonglong),
        ("tls_anchor", ctypes.c_void_p),
        ("seed", ctypes.c_ulonglong),
        ("kernel", ctypes.c_char_p),
        ("timeout_s", ctypes.c_double),
        ("count", ctypes.c_int),
        ("sample_blocks", ctypes.c_ulonglong),
    ]


class SiteRecord(ctypes.Structure):
    """Memory counters of one access site of the last launch (pygpuemu_counters.inc)."""
    _fields_ = [
        ("offset", ctypes.c_ulonglong),
        ("flags", ctypes.c_uint),
        ("size", ctypes.c_uint),
        ("requests", ctypes.c_ulonglong),
        ("units", ctypes.c_ulonglong),
        ("ideal", ctypes.c_ulonglong),
        ("lanes", ctypes.c_ulonglong),
        ("bytes", ctypes.c_ulonglong),
    ]


def runtime():
    """The loaded runtime library (built on first use)."""
    global _rt
    if _rt is not None:
        return _rt
    with _rt_lock:
        if _rt is not None:
            return _rt
        src = (CSRC / "pygpuemu_runtime.cpp").read_text()
        flags = [*_RUNTIME_FLAGS, f"-I{CSRC}", "-lpthread", "-ldl", "-lrt"]
        if os.environ.get("PYGPU_OPS_EMU_UCONTEXT"):
            flags.append("-DPYGPUEMU_USE_UCONTEXT")
        key = digest("runtime", emulator_sources_digest(), flags, compiler_version())
        # Compile the file in place (it includes pygpuemu_abi.h by a relative path).
        so = build("rt", key, src, flags, "the emulator runtime")
        lib = ctypes.CDLL(str(so), mode=ctypes.RTLD_GLOBAL)
        lib.pygpuemu_alloc.restype = ctypes.c_void_p
        lib.pygpuemu_alloc.argtypes = [ctypes.c_ulonglong, ctypes.c_char_p]
        lib.pygpuemu_free.restype = ctypes.c_int
        lib.pygpuemu_free.argtypes = [ctypes.c_void_p]
        lib.pygpuemu_is_device_ptr.restype = ctypes.c_int
        lib.pygpuemu_is_device_ptr.argtypes = [ctypes.c_void_p, ctypes.c_ulonglong]
        lib.pygpuemu_live_buffers.restype = ctypes.c_ulonglong
        lib.pygpuemu_launch.restype = ctypes.c_int
        lib.pygpuemu_launch.argtypes = [ctypes.POINTER(LaunchDesc), ctypes.c_char_p,
                                        ctypes.c_ulonglong]
        lib.pygpuemu_reset_canaries.restype = None
        lib.pygpuemu_counters_take.restype = ctypes.c_ulonglong
        lib.pygpuemu_counters_take.argtypes = [ctypes.POINTER(SiteRecord), ctypes.c_ulonglong,
                                               ctypes.POINTER(ctypes.c_ulonglong)]
        _rt = lib
        return lib


def module_flags(std, defines, include_dirs):
    flags = [f"-std={std}", "-O2", "-fPIC", "-shared", "-fno-strict-aliasing",
             "-ffp-contract=fast", "-fno-math-errno", *cpu_flags(), "-fvisibility=hidden",
             # frames larger than a page probe every page they take, so deep recursion with
             # big locals meets the guard page below each fiber stack instead of stepping over it
             "-fstack-clash-protection",
             "-fno-plt", "-ffunction-sections", "-fdata-sections",
             "-fdiagnostics-color=never", f"-I{CSRC}", f"-I{CSRC / 'include'}"]
    flags += [f"-I{d}" for d in include_dirs]
    flags += defines
    return flags


#: Compile-step flags of a module built for counting memory accesses: GCC's
#: ThreadSanitizer instrumentation (hooks in the runtime, no libtsan), without
#: the optimizations that would change which accesses the kernel makes: SRA
#: splits a float4 copy into four 4-byte accesses, the vectorizers and store
#: merging fuse neighbouring ones.  -g1 gives the line table for per-line
#: counts.
COUNTING_FLAGS = ("-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0",
                  "-fno-tree-sra", "-fno-tree-vectorize", "-fno-tree-slp-vectorize",
                  "-fno-store-merging", "-g1", "-gdwarf-4")
