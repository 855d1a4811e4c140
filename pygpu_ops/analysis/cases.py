"""What ``pygpu-ops analyze`` runs: one provider per op family, each yielding the calls to count.

A case is one public call (``po.gemm(a, b, variant="naive", backend=be)``) with its shape
and, for every kernel it launches, the work that launch does: FLOPs (and their kind: fp32, fp64,
int8) and ``bytes_min``, the compulsory DRAM traffic (every input byte read once, every output byte
written once). ``pygpu-ops analyze`` runs it on the emulator under the memory counters (each
launch becomes one row); ``profiling/run_op.py`` runs the same call on the GPU for Nsight Compute,
so measured and emulated counts come from identical launches.

Default sizes are the GPU benchmark's (``pygpu-ops bench``), so that the modeled times sit next to
measured ones; the emulator runs a sample of blocks per launch and extrapolates (the counts of a
block depend only on where it sits in the grid, so interior blocks are exact copies of each other).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

#: Work of one launch: (flops, flop kind as in analysis.model: fp32, fp64, int8-dp4a, int8-tensor,
#: bytes_min).
Work = Tuple[float, str, float]


@dataclass
class Case:
    op: str
    variant: str
    shape: str
    run: Callable[[str], object]   # run(backend): the public call on that backend
    # kernel symbol prefix -> work of that kernel's launch(es) (split by blocks if several)
    work: Dict[str, Work] = field(default_factory=dict)
    group: str = ""       # the ladder / family the row belongs to in tables and plots


def _rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def gemm_cases(sizes: Optional[Sequence[int]], variants: Optional[Sequence[str]]) -> Iterable[Case]:
    from .. import linalg

    steps = list(linalg.sgemm_variants())
    chosen = [v for v in steps if not variants or v in variants]
    for n in sizes or (4096,):
        a = _rng(n).standard_normal((n, n)).astype(np.float32)
        b = _rng(n + 1).standard_normal((n, n)).astype(np.float32)
        for v in chosen:
            yield Case("gemm", v, f"{n}x{n}x{n}", lambda be, a=a, b=b, v=v: linalg.gemm(
                a, b, variant=v, backend=be),
                {"sgemm_": (2.0 * n ** 3, "fp32", 3.0 * 4 * n * n)}, group="sgemm")
        if not variants or linalg.DGEMM.label in variants or "dgemm" in variants:
            a64, b64 = a.astype(np.float64), b.astype(np.float64)
            yield Case("gemm", linalg.DGEMM.label, f"{n}x{n}x{n}", lambda be, a=a64, b=b64: linalg.gemm(
                a, b, backend=be), {"dgemm_": (2.0 * n ** 3, "fp64", 3.0 * 8 * n * n)},
                group="dgemm")


def softmax_cases(sizes, variants) -> Iterable[Case]:
    from .. import normalization as norm

    shapes = [(8192, 1024)] if not sizes else [(max(1, s // 4), s) for s in sizes]
    for rows, L in shapes:
        x = (_rng(L).standard_normal((rows, L)) * 4).astype(np.float32)
        for v in norm.softmax_variants():
            if variants and v not in variants:
                continue
            yield Case("softmax", v, f"{rows}x{L}", lambda be, x=x, v=v: norm.softmax(
                x, axis=1, variant=v, backend=be),
                {"softmax_": (0.0, "fp32", 2.0 * 4 * rows * L)}, group="softmax")


def pooling_cases(sizes, variants) -> Iterable[Case]:
    from .. import pooling as pool

    N, C, H, W = (32, 64, 112, 112)
    OH, OW = (H + 2 - 3) // 2 + 1, (W + 2 - 3) // 2 + 1
    host = _rng(1).standard_normal((N, C, H, W)).astype(np.float32)
    nbytes = 4.0 * (host.size + N * C * OH * OW)
    for layout in ("NCHW", "NHWC"):
        x = host if layout == "NCHW" else np.ascontiguousarray(host.transpose(0, 2, 3, 1))
        for kind, fn in (("max", pool.max_pool2d), ("avg", pool.avg_pool2d)):
            yield Case(f"{kind}_pool2d", layout.lower(), f"{N}x{C}x{H}x{W} k3s2p1",
                       lambda be, x=x, fn=fn, layout=layout: fn(x, 3, stride=2, padding=1,
                                                            layout=layout, backend=be),
                       {f"{kind}_pool2d": (0.0, "fp32", nbytes)}, group="pooling")
    g = _rng(2).standard_normal((32, 2048, 7, 7)).astype(np.float32)
    for layout in ("NCHW", "NHWC"):
        x = g if layout == "NCHW" else np.ascontiguousarray(g.transpose(0, 2, 3, 1))
        yield Case("global_avg_pool2d", layout.lower(), "32x2048x7x7",
                   lambda be, x=x, layout=layout: pool.global_avg_pool2d(x, layout=layout,
                                                                     backend=be),
                   {"global_avg_pool2d": (0.0, "fp32", 4.0 * (g.size + 32 * 2048))},
                   group="pooling")


def elementwise_cases(sizes, variants) -> Iterable[Case]:
    from .. import activations as act
    from .. import conv

    n = 1 << 26
    x = _rng(4).standard_normal(n).astype(np.float32)
    yield Case("relu", "relu_vec128", str(n), lambda be: act.relu(x, backend=be),
               {"relu_vec128": (0.0, "fp32", 8.0 * n)}, group="memory")
    t = _rng(5).standard_normal((32, 256, 56, 56)).astype(np.float32)
    yield Case("nchw_to_nhwc", "transpose_tiled", "32x256x56x56",
               lambda be: conv.nchw_to_nhwc(t, backend=be),
               {"transpose_tiled": (0.0, "fp32", 8.0 * t.size)}, group="memory")
    tt = np.ascontiguousarray(t.transpose(0, 2, 3, 1))
    yield Case("nhwc_to_nchw", "transpose_tiled", "32x56x56x256",
               lambda be: conv.nhwc_to_nchw(tt, backend=be),
               {"transpose_tiled": (0.0, "fp32", 8.0 * t.size)}, group="memory")


# ResNet-50 conv3_x: 3x3, stride 1, padding 1, batch 32
CONV = (32, 128, 28)


def conv_cases(sizes, variants) -> Iterable[Case]:
    from .. import conv

    N, C, H = CONV
    x = _rng(C).standard_normal((N, C, H, H)).astype(np.float32)
    w = (_rng(C + 1).standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
    b = _rng(C + 2).standard_normal(C).astype(np.float32)
    cols = 4.0 * N * C * 9 * H * H
    io = 4.0 * (x.size + N * C * H * H)
    for layout in ("NCHW", "NHWC"):
        xi = x if layout == "NCHW" else np.ascontiguousarray(x.transpose(0, 2, 3, 1))
        wi = w if layout == "NCHW" else np.ascontiguousarray(w.transpose(0, 2, 3, 1))
        im2col = "im2col_nchw" if layout == "NCHW" else "im2col_nhwc"
        shape = f"{N}x{C}x{H}x{H} k3p1"
        yield Case("im2col", layout.lower(), shape,
                   lambda be, xi=xi, layout=layout: conv.im2col(xi, 3, padding=1, layout=layout,
                                                            backend=be),
                   {im2col: (0.0, "fp32", 4.0 * x.size + cols)}, group="conv")
        yield Case("conv2d", layout.lower(), shape,
                   lambda be, xi=xi, wi=wi, layout=layout: conv.conv2d(
                       xi, wi, b, padding=1, layout=layout, activation="relu", backend=be),
                   {im2col: (0.0, "fp32", 4.0 * x.size + cols),
                    "conv_gemm": (2.0 * N * C * H * H * C * 9, "fp32", cols + 4.0 * w.size + io / 2)},
                   group="conv")


def int8_gemm_cases(sizes, variants) -> Iterable[Case]:
    from .. import quantization as quant

    for n in sizes or (4096,):
        a = _rng(n).integers(-128, 128, (n, n), dtype=np.int8)
        b = _rng(n + 1).integers(-128, 128, (n, n), dtype=np.int8)
        for v in quant.int8_gemm_variants():
            if variants and v not in variants:
                continue
            yield Case("int8_gemm", v, f"{n}x{n}x{n}", lambda be, a=a, b=b, v=v: quant.int8_gemm(
                a, b, a_zero_point=3, b_zero_point=-2, variant=v, backend=be),
                {"int8_gemm_row_sums": (0.0, "int8-dp4a", 1.0 * n * n + 4 * n),
                 "int8_gemm_col_sums": (0.0, "int8-dp4a", 1.0 * n * n + 4 * n),
                 "int8_gemm_": (2.0 * n ** 3, "int8-tensor" if v == "mma" else "int8-dp4a",
                                2.0 * n * n + 4.0 * n * n)},
                group="int8_gemm")


PROVIDERS: Dict[str, Callable] = {
    "gemm": gemm_cases,
    "softmax": softmax_cases,
    "pooling": pooling_cases,
    "elementwise": elementwise_cases,
    "conv": conv_cases,
    "int8_gemm": int8_gemm_cases,
}


def launch_work(case: Case, kernel: str, blocks: int, all_blocks: Dict[str, int]) -> Work:
    """The work of one launch of ``kernel`` in ``case``: the entry whose prefix the kernel name
    starts with (the longest), split over that entry's launches by their share of blocks."""
    best = prefix_of(case, kernel)
    if best is None:
        return (0.0, "fp32", 0.0)
    flops, kind, nbytes = case.work[best]
    share = blocks / all_blocks[best] if all_blocks.get(best) else 1.0
    return (flops * share, kind, nbytes * share)


def prefix_of(case: Case, kernel: str) -> Optional[str]:
    """The longest key of ``case.work`` that ``kernel`` starts with (None: no work recorded)."""
    return max((p for p in case.work if kernel.startswith(p)), key=len, default=None)


def cases(ops: Optional[Sequence[str]] = None, sizes=None, variants=None) -> List[Case]:
    unknown = sorted(set(ops or ()) - set(PROVIDERS))
    if unknown:
        raise ValueError(f"analyze: unknown op families {unknown}; known: {sorted(PROVIDERS)}")
    out: List[Case] = []
    for name in ops or PROVIDERS:
        out.extend(PROVIDERS[name](sizes, variants))
    return out
