"""SASS targets: what the machine code of our kernels must keep, checked by ``pygpu-ops check --sass``.

A GPU is lent rarely; the SASS is the closest thing to a speed measurement we have every day. Each
:class:`Target` names a kernel (its ``__global__`` symbol: every registered instantiation), why the
target exists, and the figures its SASS must hold, read with :mod:`.sass` from the cubin NVRTC
builds (the compile gate's options):

* ``min_fastpath_math``: the hot loop's fast path (the aligned, in-bounds steady-state iteration,
  see :mod:`.sass`) has at least this share of math instructions (FFMA, DFMA, IMMA, ...);
* ``at_least_as``: the fast-path math share is at least that of another kernel (e.g. double
  buffering must not cost instructions over the vectorized step), on the same arch and compiler;
* ``no_local``: no spill, no stack frame, no LDL/STL anywhere in the kernel;
* ``require``: instruction classes that must appear (``LDSM``, ``LDGSTS``, ``LDG.128``...);
* ``no_calls``: no CALL (subroutine calls come from 64-bit division/remainder slow paths and
  from functions ptxas did not inline); ``calls_at_most_as``: no more CALLs than another kernel
  (the conv GEMM against the SGEMM whose main loop it shares: its epilogue adds none);
* ``max_mix``: at most so many instructions of a class (e.g. ``MUFU`` for one exp per element);
* ``instances``: only the instantiations whose name expression contains one of these strings
  (default: every registered instantiation of the symbol); ``exclude``: not those containing one
  of these;
* ``max_instructions`` and ``max_instructions_vs`` (another kernel and a ratio): bounds on the
  kernel's size.

Targets are set for sm_90 under NVRTC 13 and held on sm_80 and sm_86 and under NVRTC 12 (each
target's ``archs``). ``check`` returns one :class:`Result` per (target, kernel instantiation, arch,
NVRTC); ``pygpu-ops check --sass`` prints them and fails on a miss. A target is added when its
kernel meets it, with the figure it reached in ``why``, so the gate fails when a change loses it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from .._runtime.kernels import Kernel, all_kernels
from . import sass

ARCHS = ("sm_80", "sm_86", "sm_90")


@dataclass(frozen=True)
class Target:
    symbol: str
    why: str
    min_fastpath_math: Optional[float] = None
    at_least_as: Optional[str] = None
    no_local: bool = False
    require: Tuple[str, ...] = ()
    no_calls: bool = False
    calls_at_most_as: Optional[str] = None
    max_instructions: Optional[int] = None
    max_instructions_vs: Optional[Tuple[str, float]] = None
    max_mix: Tuple[Tuple[str, int], ...] = ()
    instances: Tuple[str, ...] = ()
    exclude: Tuple[str, ...] = ()
    archs: Tuple[str, ...] = ARCHS


#: The registry of targets (issue 16), one entry per kernel symbol.
TARGETS: Tuple[Target, ...] = (
    Target("sgemm_blocktile_2d",
           "the k loop unrolled, so the hot loop is the whole K tile: 83.9% FFMA on sm_90 "
           "(NVRTC 13.5; 83.4-84.3% elsewhere), the published step's 82% (was 66.9%)",
           min_fastpath_math=0.80, no_local=True),
    Target("sgemm_double_buffered",
           "double buffering must not cost instructions: 88.7% on sm_90 (NVRTC 13.5) against "
           "the vectorized step's 86.9% (was 84.8%)",
           at_least_as="sgemm_vectorized", no_local=True),
    Target("sgemm_warptile",
           "unrolled, address arithmetic out of the loop, <= 128 registers: 91.8% FFMA on "
           "sm_90 (NVRTC 13.5; 91.7% elsewhere), the best compiler-generated published figure "
           "(was 89.4%)",
           min_fastpath_math=0.91, no_local=True),
    Target("conv_gemm_warptile",
           "no 64-bit division in the store path (pixel coordinates from a host-split first "
           "pixel and a 32-bit Granlund-Montgomery magic division): 5,820 instructions on sm_90 "
           "(NVRTC 13.5), 1.27x sgemm_warptile, no CALL beyond the ones warptile has (was 16,901 "
           "instructions and 256 calls of __cuda_sm20_div_s64)",
           calls_at_most_as="sgemm_warptile", max_instructions_vs=("sgemm_warptile", 1.5),
           no_local=True),
    Target("softmax_warp",
           "16-byte packs with a scalar head and tail, exp once per element held in registers: "
           "974 instructions, 8 LDG.128 + 8 STG.128, 37 MUFU for 32 elements per lane on sm_90 "
           "(NVRTC 13.5; was 1,560 straight-line instructions, 64 MUFU.EX2, scalar accesses)",
           require=("LDG.128", "STG.128"), max_instructions=1100, max_mix=(("MUFU", 40),),
           instances=("<float, false, 32, 32>",), no_local=True),
    Target("softmax_warp",
           "no row unrolled into thousands of instructions: a register-resident instantiation "
           "holds at most 128 bytes of its row per lane (double <32, 32> was 3,233 "
           "instructions, 2,103 after the packs; doubles now stop at 16 per lane, <= 741); the "
           "streaming <0, 32> kernels loop over the row",
           max_instructions=1500, exclude=(", 0, 32>",), no_local=True),
    Target("softmax_block",
           "16-byte packs with a scalar head and tail (was scalar 32-bit accesses only)",
           require=("LDG.128", "STG.128"), instances=("<float,",), no_local=True),
    Target("dgemm_blocktile_2d",
           "8 x 8 micro-tile on a 128 x 128 tile, two tiles per iteration: 81.5% DFMA on sm_90 "
           "(NVRTC 13.5; 80.9-81.5% elsewhere; was 66.0%)",
           min_fastpath_math=0.80, no_local=True),
    Target("int8_gemm_mma",
           "a real tensor-core kernel: accumulators in registers, ldmatrix fragments from a "
           "swizzled conflict-free layout, a cp.async pipeline; IMMA 43.0% of the fast path on "
           "sm_90 (NVRTC 13.5), 43.5-43.7% elsewhere (was 9.0%, with an 8 B spill / 272 B stack "
           "under some compilers)",
           min_fastpath_math=0.40, no_local=True, require=("IMMA", "LDSM", "LDGSTS")),
    Target("gather_rows",
           "embedding rows move as 128-bit vectors: one LDG.128 + STG.128 per 16 bytes on the "
           "uint4 path; no CALL (grid-stride loops on all three grid axes, no 64-bit division)",
           require=("LDG.128", "STG.128"), instances=("<uint4,",), no_calls=True, no_local=True),
)


@dataclass
class Result:
    target: Target
    kernel: str
    arch: str
    compiler: str
    ok: bool
    failures: List[str]
    figures: Dict[str, object]

    def line(self) -> str:
        status = "ok  " if self.ok else "MISS"
        figs = ", ".join(f"{k} {v}" for k, v in self.figures.items())
        tail = "" if self.ok else "  <- " + "; ".join(self.failures)
        return f"{status} {self.kernel:50s} {self.compiler}, {self.arch}: {figs}{tail}"


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _first(symbol: str, kernels: Sequence[Kernel]) -> Kernel:
    """The first registered instantiation of ``symbol`` (`check` has made sure there is one)."""
    return next(k for k in kernels if k.symbol == symbol)


def _calls(kernel: Kernel, arch: str, nvrtc: int) -> int:
    return sum(1 for i in sass.kernel_sass(kernel, arch, nvrtc) if i.opcode.startswith("CALL"))


def evaluate(target: Target, kernel: Kernel, arch: str, nvrtc: int,
             kernels: Sequence[Kernel]) -> Result:
    """One kernel instantiation against its target on one arch and compiler."""
    st = sass.sass_stats(kernel, arch=arch, nvrtc=nvrtc)
    fails: List[str] = []
    figs: Dict[str, object] = {}
    share = st.fastpath_math_fraction
    if target.min_fastpath_math is not None or target.at_least_as:
        figs["fast-path math"] = _pct(share)
    if target.min_fastpath_math is not None and (share is None or
                                                 share < target.min_fastpath_math):
        fails.append(f"fast-path math {_pct(share)} < {_pct(target.min_fastpath_math)}")
    if target.at_least_as:
        other = _first(target.at_least_as, kernels)
        ref = sass.sass_stats(other, arch=arch, nvrtc=nvrtc).fastpath_math_fraction
        if share is None or ref is None or share + 1e-9 < ref:
            fails.append(f"fast-path math {_pct(share)} < {target.at_least_as}'s {_pct(ref)}")
    if target.no_local:
        local = st.spill_bytes + st.stack_bytes + st.mix.get("LDL", 0) + st.mix.get("STL", 0)
        figs["local"] = f"spill {st.spill_bytes} B, stack {st.stack_bytes} B, " \
                        f"LDL {st.mix.get('LDL', 0)}, STL {st.mix.get('STL', 0)}"
        if local:
            fails.append("local memory used")
    for cls in target.require:
        figs[cls] = st.mix.get(cls, 0)
        if not st.mix.get(cls, 0):
            fails.append(f"no {cls}")
    if target.no_calls or target.calls_at_most_as:
        calls = _calls(kernel, arch, nvrtc)
        figs["CALL"] = calls
        if target.no_calls and calls:
            fails.append(f"{calls} CALL instructions")
        if target.calls_at_most_as:
            ref = _calls(_first(target.calls_at_most_as, kernels), arch, nvrtc)
            if calls > ref:
                fails.append(f"{calls} CALL instructions > {target.calls_at_most_as}'s {ref}")
    for cls, most in target.max_mix:
        figs[cls] = st.mix.get(cls, 0)
        if st.mix.get(cls, 0) > most:
            fails.append(f"{st.mix.get(cls, 0)} {cls} > {most}")
    if target.max_instructions is not None:
        figs["instructions"] = st.instructions
        if st.instructions > target.max_instructions:
            fails.append(f"{st.instructions} instructions > {target.max_instructions}")
    if target.max_instructions_vs is not None:
        name, ratio = target.max_instructions_vs
        ref = sass.sass_stats(_first(name, kernels), arch=arch, nvrtc=nvrtc).instructions
        figs["instructions"] = st.instructions
        figs[f"vs {name}"] = f"{st.instructions / ref:.2f}x"
        if st.instructions > ratio * ref:
            fails.append(f"{st.instructions} instructions > {ratio} x {name}'s {ref}")
    return Result(target, kernel.name_expression, arch, st.compiler, not fails, fails, figs)


def check(nvrtc: Iterable[int] = (12, 13), archs: Optional[Sequence[str]] = None,
          targets: Optional[Sequence[Target]] = None) -> List[Result]:
    """Every target (default: :data:`TARGETS`) on every registered instantiation of its kernel,
    per arch and NVRTC major. Raises :class:`sass.SassUnavailable` when an NVRTC or nvdisasm is
    missing."""
    targets = TARGETS if targets is None else targets
    kernels = all_kernels()
    symbols = {k.symbol for k in kernels}
    for t in targets:
        refs = [t.at_least_as, t.calls_at_most_as,
                t.max_instructions_vs[0] if t.max_instructions_vs else None]
        for name in [r for r in refs if r and r not in symbols]:
            raise ValueError(f"SASS target for {t.symbol!r} compares with {name!r}: no registered "
                             "kernel has that symbol")
    out: List[Result] = []
    for major in nvrtc:
        for t in targets:
            chosen = [k for k in kernels if k.symbol == t.symbol
                      and (not t.instances or any(i in k.name_expression for i in t.instances))
                      and not any(e in k.name_expression for e in t.exclude)]
            if not chosen:
                raise ValueError(f"SASS target for {t.symbol!r}: no registered kernel has that "
                                 "symbol")
            for arch in t.archs:
                if archs and arch not in archs:
                    continue
                for k in chosen:
                    out.append(evaluate(t, k, arch, major, kernels))
    return out
