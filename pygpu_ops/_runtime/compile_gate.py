"""The offline compile gate: every registered kernel through NVRTC 12 and 13 for several GPU archs.

No GPU, driver or CUDA toolkit is needed. The gate drives ``libnvrtc`` directly through ctypes
(the handful of NVRTC C functions below), so one process can load NVRTC 12 (``libnvrtc.so.12``
from the ``nvidia-cuda-nvrtc-cu12`` wheel, the ``nvrtc12`` extra) and NVRTC 13
(``libnvrtc.so.13`` from ``nvidia-cuda-nvrtc``, the ``nvrtc13`` extra) side by side: the
compilers CuPy uses under ``cupy-cuda12x`` and ``cupy-cuda13x``. It compiles each kernel source
with all of its registered instantiations to a cubin with CuPy's own options plus
``--ptxas-options=-v``; the ptxas report gives registers, spill bytes and static shared memory per
kernel. The gate fails on any compile error, and on spills in kernels registered with
``no_spill``, under either NVRTC.

An arch that one NVRTC no longer supports (NVRTC 13 dropped sm_50 ... sm_72; ``nvrtcGetSupportedArchs``
says which) is gated under the others only, and the report says so; an arch that no requested NVRTC
supports is an error.
"""
from __future__ import annotations

import ctypes
import importlib.util
import os
import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import sources
from .kernels import Kernel, all_kernels

ARCHS: Tuple[str, ...] = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
#: The NVRTC major versions the gate knows how to find, in the order it runs them.
NVRTC_MAJORS: Tuple[int, ...] = (12, 13)
#: What CuPy's RawModule adds on its own, so the gate compiles what the runtime will (CuPy
#: v14.2.0): ``-ftz=true`` in ``_compile_with_cache_cuda`` and ``--device-as-default-execution-space``
#: in ``_compile_using_nvrtc_no_warning`` (both cupy/cuda/compiler.py; the latter because
#: RawModule's jitify defaults to off). It also passes ``-arch=sm_XX`` (a cubin, not PTX, for any
#: arch the NVRTC knows; `compile_module` does the same), ``--std=c++17`` only when the options
#: name no ``-std`` (ours do: ``kernels.BASE_OPTIONS``), and ``-I`` paths to CCCL, its own headers
#: and the CUDA headers (``assemble_cupy_compiler_options`` in cupy/_core/core.pyx), which no
#: kernel here includes; ``--pch`` only with ``CUPY_NVRTC_USE_PCH=1``. None of those last change
#: the code.
GATE_OPTIONS: Tuple[str, ...] = ("-ftz=true", "--device-as-default-execution-space")

#: Where each NVRTC major comes from: (pip package, extra of this package, library file name,
#: folder of the library inside the ``nvidia`` namespace package the wheel installs).
_WHEELS: Dict[int, Tuple[str, str, str, str]] = {
    12: ("nvidia-cuda-nvrtc-cu12", "nvrtc12", "libnvrtc.so.12", "cuda_nvrtc/lib"),
    13: ("nvidia-cuda-nvrtc", "nvrtc13", "libnvrtc.so.13", "cu13/lib"),
}


class GateUnavailable(RuntimeError):
    pass


@dataclass
class KernelReport:
    kernel: str
    source: str
    arch: str
    registers: int
    spill_stores: int
    spill_loads: int
    stack_frame: int
    smem: int
    no_spill: bool
    nvrtc: str = ""

    @property
    def spills(self) -> int:
        return self.spill_stores + self.spill_loads

    @property
    def ok(self) -> bool:
        return not (self.no_spill and self.spills)


@dataclass
class ModuleError:
    source: str
    arch: str
    log: str
    nvrtc: str = ""


@dataclass
class Skipped:
    """An (NVRTC, arch) pair left out because that NVRTC does not support the arch."""

    nvrtc: str
    arch: str
    gated_under: Tuple[str, ...]

    @property
    def message(self) -> str:
        return (f"{self.arch}: not supported by NVRTC {self.nvrtc}; gated under NVRTC "
                f"{', '.join(self.gated_under)} only")


@dataclass
class GateResult:
    reports: List[KernelReport]
    errors: List[ModuleError]
    skipped: List[Skipped] = field(default_factory=list)
    nvrtc: Dict[str, str] = field(default_factory=dict)   # version -> library path

    @property
    def bad(self) -> List[KernelReport]:
        return [r for r in self.reports if not r.ok]


# ------------------------------------------------------------------------------------------------
# libnvrtc through ctypes
# ------------------------------------------------------------------------------------------------
_P = ctypes.c_void_p
_S = ctypes.c_char_p
_PP = ctypes.POINTER(ctypes.c_char_p)
_SIGNATURES = {
    "nvrtcGetErrorString": (_S, [ctypes.c_int]),
    "nvrtcVersion": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int), ctypes.POINTER(ctypes.c_int)]),
    "nvrtcGetNumSupportedArchs": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
    "nvrtcGetSupportedArchs": (ctypes.c_int, [ctypes.POINTER(ctypes.c_int)]),
    "nvrtcCreateProgram": (ctypes.c_int, [ctypes.POINTER(_P), _S, _S, ctypes.c_int, _PP, _PP]),
    "nvrtcDestroyProgram": (ctypes.c_int, [ctypes.POINTER(_P)]),
    "nvrtcAddNameExpression": (ctypes.c_int, [_P, _S]),
    "nvrtcCompileProgram": (ctypes.c_int, [_P, ctypes.c_int, _PP]),
    "nvrtcGetProgramLogSize": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "nvrtcGetProgramLog": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "nvrtcGetLoweredName": (ctypes.c_int, [_P, _S, ctypes.POINTER(ctypes.c_char_p)]),
    "nvrtcGetPTXSize": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "nvrtcGetPTX": (ctypes.c_int, [_P, ctypes.c_char_p]),
    "nvrtcGetCUBINSize": (ctypes.c_int, [_P, ctypes.POINTER(ctypes.c_size_t)]),
    "nvrtcGetCUBIN": (ctypes.c_int, [_P, ctypes.c_char_p]),
}


@dataclass
class Compiled:
    """The outcome of one NVRTC compile: success, the log, lowered names and the requested output."""

    ok: bool
    log: str
    lowered: Dict[str, str]
    output: bytes = b""


class Nvrtc:
    """One loaded libnvrtc: its version, the archs it compiles for, and `compile`."""

    def __init__(self, path: str) -> None:
        self.path = path
        lib = ctypes.CDLL(path)   # RTLD_LOCAL: NVRTC 12 and 13 coexist in one process
        for name, (restype, argtypes) in _SIGNATURES.items():
            fn = getattr(lib, name)
            fn.restype, fn.argtypes = restype, argtypes
        self._lib = lib
        major, minor = ctypes.c_int(), ctypes.c_int()
        self._call("nvrtcVersion", ctypes.byref(major), ctypes.byref(minor))
        self.major, self.minor = major.value, minor.value
        n = ctypes.c_int()
        self._call("nvrtcGetNumSupportedArchs", ctypes.byref(n))
        archs = (ctypes.c_int * n.value)()
        self._call("nvrtcGetSupportedArchs", archs)
        self.archs: Tuple[str, ...] = tuple(f"sm_{a}" for a in archs)

    @property
    def version(self) -> str:
        return f"{self.major}.{self.minor}"

    def __repr__(self) -> str:
        return f"Nvrtc({self.version}, {self.path!r})"

    def _call(self, name: str, *args) -> int:
        err = getattr(self._lib, name)(*args)
        if err:
            msg = self._lib.nvrtcGetErrorString(err)
            raise RuntimeError(f"NVRTC {name} failed: {msg.decode() if msg else err}")
        return err

    def compile(self, code: str, name: str, options: Sequence[str], name_expressions: Sequence[str] = (),
                output: Optional[str] = None) -> Compiled:
        """Compile ``code``; ``output`` "ptx" or "cubin" also returns that image."""
        if output not in (None, "ptx", "cubin"):
            raise ValueError(f"output must be None, 'ptx' or 'cubin', got {output!r}")
        prog = _P()
        self._call("nvrtcCreateProgram", ctypes.byref(prog), code.encode(), name.encode(), 0, None, None)
        try:
            for expr in name_expressions:
                self._call("nvrtcAddNameExpression", prog, expr.encode())
            opts = (ctypes.c_char_p * len(options))(*(o.encode() for o in options))
            err = self._lib.nvrtcCompileProgram(prog, len(options), opts)
            size = ctypes.c_size_t()
            self._call("nvrtcGetProgramLogSize", prog, ctypes.byref(size))
            buf = ctypes.create_string_buffer(size.value)
            self._call("nvrtcGetProgramLog", prog, buf)
            log = buf.value.decode(errors="replace").rstrip()
            if err:
                return Compiled(False, log, {})
            lowered = {}
            for expr in name_expressions:
                low = ctypes.c_char_p()
                self._call("nvrtcGetLoweredName", prog, expr.encode(), ctypes.byref(low))
                lowered[expr] = low.value.decode()
            image = b""
            if output is not None:
                kind = "PTX" if output == "ptx" else "CUBIN"
                self._call(f"nvrtcGet{kind}Size", prog, ctypes.byref(size))
                buf = ctypes.create_string_buffer(size.value)
                self._call(f"nvrtcGet{kind}", prog, buf)
                image = buf.raw
            return Compiled(True, log, lowered, image)
        finally:
            self._lib.nvrtcDestroyProgram(ctypes.byref(prog))


def nvidia_wheel_dirs() -> List[Path]:
    """The folders of the ``nvidia`` namespace package that NVIDIA's pip wheels install into."""
    try:
        spec = importlib.util.find_spec("nvidia")
    except (ImportError, ValueError):
        spec = None
    return [Path(base) for base in (spec.submodule_search_locations or [])] if spec else []


def _candidates(major: int) -> List[str]:
    """The library files to try for ``major``: the pip wheel's, then the system loader's name."""
    _, _, soname, sub = _WHEELS[major]
    found = [str(base / sub / soname) for base in nvidia_wheel_dirs() if (base / sub / soname).is_file()]
    return found + [soname]


_LOADED: Dict[int, Nvrtc] = {}


def load_nvrtc(major: int) -> Nvrtc:
    """NVRTC ``major`` (12 or 13), from its pip wheel or else the system's library path."""
    if major not in _WHEELS:
        raise ValueError(f"nvrtc must be one of {', '.join(map(str, NVRTC_MAJORS))}, got {major!r}")
    if major in _LOADED:
        return _LOADED[major]
    package, extra, soname, _ = _WHEELS[major]
    problems = []
    for path in _candidates(major):
        try:
            nv = Nvrtc(path)
        except (OSError, AttributeError, RuntimeError) as exc:
            problems.append(f"{path}: {exc}")
            continue
        if nv.major != major:
            problems.append(f"{path} is NVRTC {nv.version}")
            continue
        _LOADED[major] = nv
        return nv
    raise GateUnavailable(
        f"NVRTC {major} not found: pip install 'pygpu_ops[{extra}]' (the {package} wheel, {soname}); "
        f"tried {'; '.join(problems)}")


def available_nvrtc() -> List[Nvrtc]:
    """Every NVRTC major that loads, in `NVRTC_MAJORS` order."""
    out = []
    for major in NVRTC_MAJORS:
        try:
            out.append(load_nvrtc(major))
        except GateUnavailable:
            pass
    return out


def _select(nvrtc: Optional[Sequence[int]]) -> List[Nvrtc]:
    if nvrtc:
        return [load_nvrtc(m) for m in dict.fromkeys(nvrtc)]
    found = available_nvrtc()
    if not found:
        raise GateUnavailable(
            "the offline compile gate needs NVRTC 12 and/or 13: pip install 'pygpu_ops[nvrtc]' "
            "(the nvidia-cuda-nvrtc-cu12 and nvidia-cuda-nvrtc wheels; no GPU or toolkit needed)")
    return found


def nvrtc_version() -> str:
    """The versions of every NVRTC found, e.g. ``"12.9, 13.5"``; `GateUnavailable` if none."""
    return ", ".join(nv.version for nv in _select(None))


# ------------------------------------------------------------------------------------------------
# ptxas report
# ------------------------------------------------------------------------------------------------
_FUNC = re.compile(r"Compiling entry function '([^']+)' for '(sm_\d+)'")
_PROPS = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers(?:.*?, (\d+) bytes smem)?")


def parse_ptxas(log: str) -> Dict[str, Dict[str, int]]:
    """Per mangled entry: registers, smem, stack frame, spill stores/loads, from a ptxas -v log."""
    out: Dict[str, Dict[str, int]] = {}
    current: Optional[str] = None
    for line in log.splitlines():
        m = _FUNC.search(line)
        if m:
            current = m.group(1)
            out[current] = {"registers": 0, "smem": 0, "stack_frame": 0, "spill_stores": 0, "spill_loads": 0}
            continue
        if current is None:
            continue
        m = _PROPS.search(line)
        if m:
            out[current].update(stack_frame=int(m.group(1)), spill_stores=int(m.group(2)), spill_loads=int(m.group(3)))
            continue
        m = _USED.search(line)
        if m:
            out[current].update(registers=int(m.group(1)), smem=int(m.group(2) or 0))
    return out


# ------------------------------------------------------------------------------------------------
# The gate
# ------------------------------------------------------------------------------------------------
_ARCH = re.compile(r"sm_\d+")


def gate_options(kernel: Kernel, arch: str) -> Tuple[str, ...]:
    """Exactly what CuPy's RawModule hands NVRTC for ``kernel`` on an ``arch`` GPU, plus ptxas -v."""
    return kernel.options(GATE_OPTIONS) + (f"-arch={arch}", "--ptxas-options=-v")


def compile_module(kernels: Sequence[Kernel], arch: str, nvrtc: Optional[Nvrtc] = None):
    """Compile one source file (all of ``kernels``, which share it) for ``arch``: (reports, error).

    ``nvrtc`` defaults to the newest NVRTC found.
    """
    _, reports, error = build_module(kernels, arch, nvrtc)
    return reports, error


def build_module(kernels: Sequence[Kernel], arch: str, nvrtc: Optional[Nvrtc] = None,
                 output: Optional[str] = None) -> Tuple[Compiled, List[KernelReport], Optional[ModuleError]]:
    """`compile_module` that also returns NVRTC's `Compiled` (with the cubin for ``output="cubin"``)."""
    nv = nvrtc if nvrtc is not None else _select(None)[-1]
    first = kernels[0]
    exprs = [k.name_expression for k in kernels]
    res = nv.compile(sources.expand(first.source), first.source, gate_options(first, arch), exprs, output)
    if not res.ok:
        return res, [], ModuleError(first.source, arch, res.log, nv.version)
    stats = parse_ptxas(res.log)
    reports = []
    for k in kernels:
        s = stats.get(res.lowered[k.name_expression])
        if s is None:
            return res, [], ModuleError(first.source, arch, f"no ptxas report for {k.name_expression}\n{res.log}",
                                        nv.version)
        reports.append(KernelReport(k.name_expression, k.source, arch, no_spill=k.no_spill, nvrtc=nv.version, **s))
    return res, reports, None


def plan(archs: Sequence[str], nvrtcs: Sequence[Nvrtc]) -> Tuple[List[Tuple[Nvrtc, str]], List[Skipped]]:
    """The (NVRTC, arch) pairs to compile, and those left out because that NVRTC lacks the arch."""
    pairs, skipped = [], []
    for arch in dict.fromkeys(archs):
        if not isinstance(arch, str) or not _ARCH.fullmatch(arch):
            raise ValueError(f"arch must look like 'sm_90', got {arch!r}")
        have = [nv for nv in nvrtcs if arch in nv.archs]
        if not have:
            raise GateUnavailable(
                f"{arch} is supported by none of NVRTC {', '.join(nv.version for nv in nvrtcs)} "
                f"(they support {', '.join(sorted({a for nv in nvrtcs for a in nv.archs}, key=lambda a: int(a[3:])))})")
        pairs += [(nv, arch) for nv in have]
        skipped += [Skipped(nv.version, arch, tuple(h.version for h in have)) for nv in nvrtcs if nv not in have]
    return pairs, skipped


def run_gate(kernels: Optional[Iterable[Kernel]] = None, archs: Sequence[str] = ARCHS, jobs: int = 0,
             nvrtc: Optional[Sequence[int]] = None) -> GateResult:
    """Compile every (module, arch) under every NVRTC in ``nvrtc`` (majors; default: all found)."""
    nvrtcs = _select(nvrtc)
    pairs, skipped = plan(archs, nvrtcs)
    kernels = list(all_kernels() if kernels is None else kernels)
    modules: Dict[tuple, List[Kernel]] = {}
    for k in kernels:
        modules.setdefault(k.module_key, []).append(k)
    tasks = [(ks, arch, nv) for nv, arch in pairs for ks in modules.values()]
    with ThreadPoolExecutor(max_workers=jobs or max(1, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda t: compile_module(*t), tasks))   # ctypes drops the GIL in NVRTC
    return GateResult(reports=[r for rs, _ in results for r in rs],
                      errors=[e for _, e in results if e is not None],
                      skipped=skipped, nvrtc={nv.version: nv.path for nv in nvrtcs})


def format_table(reports: Sequence[KernelReport]) -> str:
    rows = [("kernel", "nvrtc", "arch", "regs", "spill B", "smem B", "status")]
    for r in reports:
        status = "ok" if r.ok else "SPILLS"
        rows.append((r.kernel, r.nvrtc, r.arch, str(r.registers), str(r.spills), str(r.smem), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_json(result: GateResult) -> dict:
    return {"nvrtc": [{"version": v, "library": p} for v, p in result.nvrtc.items()],
            "reports": [dict(asdict(r), spills=r.spills, ok=r.ok) for r in result.reports],
            "errors": [asdict(e) for e in result.errors],
            "skipped": [dict(asdict(s), message=s.message) for s in result.skipped]}
