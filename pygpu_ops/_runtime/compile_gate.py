"""The offline compile gate: every registered kernel through NVRTC for several GPU architectures.

No GPU or driver is needed: ``cuda.bindings.nvrtc`` (the ``nvrtc`` extra) compiles each kernel
source with all of its registered instantiations to a cubin with ``--ptxas-options=-v``; the
ptxas report gives registers, spill bytes and static shared memory per kernel. The gate fails
on any compile error, and on spills in kernels registered with ``no_spill``.
"""
from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from . import sources
from .kernels import Kernel, all_kernels

ARCHS: Tuple[str, ...] = ("sm_75", "sm_80", "sm_86", "sm_89", "sm_90")
#: What CuPy adds on its own, so the gate compiles what the runtime will.
GATE_OPTIONS: Tuple[str, ...] = ("--ftz=true",)


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


def _nvrtc():
    try:
        from cuda.bindings import nvrtc
    except ImportError as exc:
        raise GateUnavailable(
            "the offline compile gate needs NVRTC: pip install 'pygpu_ops[nvrtc]' "
            f"(cuda-bindings and nvidia-cuda-nvrtc-cu12); import failed: {exc}"
        ) from None
    return nvrtc


def nvrtc_version() -> str:
    nvrtc = _nvrtc()
    err, major, minor = nvrtc.nvrtcVersion()
    return f"{major}.{minor}"


def _check(nvrtc, result, what: str) -> None:
    err = result[0] if isinstance(result, tuple) else result
    if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
        raise RuntimeError(f"NVRTC {what} failed: {err}")


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


def compile_module(kernels: Sequence[Kernel], arch: str):
    """Compile one source file (all of ``kernels``, which share it) for ``arch``."""
    nvrtc = _nvrtc()
    first = kernels[0]
    code = sources.expand(first.source).encode()
    err, prog = nvrtc.nvrtcCreateProgram(code, first.source.encode(), 0, [], [])
    _check(nvrtc, err, "nvrtcCreateProgram")
    try:
        for k in kernels:
            _check(nvrtc, nvrtc.nvrtcAddNameExpression(prog, k.name_expression.encode()), "nvrtcAddNameExpression")
        opts = [o.encode() for o in first.options(GATE_OPTIONS)] + [
            f"--gpu-architecture={arch}".encode(), b"--ptxas-options=-v"]
        result = nvrtc.nvrtcCompileProgram(prog, len(opts), opts)
        _, size = nvrtc.nvrtcGetProgramLogSize(prog)
        log = b" " * size
        nvrtc.nvrtcGetProgramLog(prog, log)
        log = log.decode(errors="replace").rstrip("\x00 \n")
        if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            return [], ModuleError(first.source, arch, log)
        stats = parse_ptxas(log)
        reports = []
        for k in kernels:
            _, lowered = nvrtc.nvrtcGetLoweredName(prog, k.name_expression.encode())
            s = stats.get(lowered.decode())
            if s is None:
                return [], ModuleError(first.source, arch, f"no ptxas report for {k.name_expression}\n{log}")
            reports.append(KernelReport(k.name_expression, k.source, arch, no_spill=k.no_spill, **s))
        return reports, None
    finally:
        nvrtc.nvrtcDestroyProgram(prog)


def run_gate(kernels: Optional[Iterable[Kernel]] = None, archs: Sequence[str] = ARCHS, jobs: int = 0):
    """Compile every (module, arch); returns (reports, errors)."""
    kernels = list(all_kernels() if kernels is None else kernels)
    modules: Dict[tuple, List[Kernel]] = {}
    for k in kernels:
        modules.setdefault(k.module_key, []).append(k)
    tasks = [(ks, arch) for ks in modules.values() for arch in archs]
    _nvrtc()
    import os

    with ThreadPoolExecutor(max_workers=jobs or max(1, os.cpu_count() or 1)) as pool:
        results = list(pool.map(lambda t: compile_module(*t), tasks))
    reports = [r for rs, _ in results for r in rs]
    errors = [e for _, e in results if e is not None]
    return reports, errors


def format_table(reports: Sequence[KernelReport]) -> str:
    rows = [("kernel", "arch", "regs", "spill B", "smem B", "status")]
    for r in reports:
        status = "ok" if r.ok else "SPILLS"
        rows.append((r.kernel, r.arch, str(r.registers), str(r.spills), str(r.smem), status))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def as_json(reports, errors) -> dict:
    return {"reports": [dict(asdict(r), spills=r.spills, ok=r.ok) for r in reports],
            "errors": [asdict(e) for e in errors]}
