"""``pygpu-ops bench``, the main job: each kernel variant against the vendor library, in the
roofline unit (TFLOP/s for GEMM, GB/s for memory-bound ops), with the ratio to the baseline.

Two times per case, both in the table and the JSON:

- **kernel time** (``kernel_*_ms``): the GPU time of the launches alone. One call is captured into
  a CUDA graph on a non-blocking CuPy stream (``Stream.begin_capture`` / ``end_capture``, after
  two warm-up calls so the kernels are compiled and CuPy's memory pool holds the blocks the call
  allocates); the graph is replayed between two CUDA events on that stream, the L2 cache
  overwritten before each replay. PyTorch rows (the vendor baselines) are captured with
  ``torch.cuda.graph`` on the same stream (``torch.cuda.ExternalStream``), since PyTorch launches
  on its own current stream. Where a call cannot be captured (it copies from the host or
  synchronizes), the row falls back to events around the call, which also counts the time the
  GPU waits for Python; ``kernel_method`` says which was used, ``capture_error`` why.
- **op time** (``op_*_ms``): the public call as a user sees it, wall clock from the call to the
  device being synchronized, the L2 cache overwritten before each call.

Throughput and the ratio to the vendor come from the kernel time on a GPU. Each time is the
median (with min and max) of ``--repeats`` runs; inputs are random (never all-zero), every
timed result is checked against a float64 reference with an error bound, and TF32 is disabled
for the vendor libraries before the first GEMM. Without a GPU the first line says so and the
NumPy fallback is timed (op time only) against PyTorch on the CPU where it is importable (the
``torch-cpu`` rows, the vendor rows then, at the fallback's thread count: ``PYGPU_OPS_NUM_THREADS``
or the affinity mask, `pygpu_ops._runtime.threads`), else against plain NumPy/BLAS; emulator runs
are never timed. On the CPU the cases of a group are timed in alternating blocks (`CpuTimer`: a
pause, warm-up calls, then timed calls, three rounds), so a shared machine's load falls on ours
and the baseline alike and neither's idle threads spin on the other's time, and ``time/vendor``
(ours over the baseline's median) is the number to read. Each CPU row also records the memory
one call adds at its peak, ``peak_traced_bytes`` and ``peak_rss_bytes`` (``meta.memory`` says how).
Then ``pygpu-ops analyze`` runs for the SGEMM ladder and the memory-bound ops (``no_gpu_analysis``):
the emulator's memory counters, the SASS, occupancy and a modeled time on an H200, printed after
the timings, stored under ``analysis`` in the JSON and drawn with ``--plot``; all of it is labelled
counts and a model, never measurements.

A case that raises is a failed row (its error type and message) and the run goes on; the JSON
is written at the end whatever happens (an interrupt included), and the exit status is non-zero
when a case failed or gave a wrong result.

Cases come from a registry of providers, one per op family (``PROVIDERS``); adding an op to the
benchmark is one provider function.

``--model MODEL.onnx`` times a whole model instead (`model_cases`, the only provider then, with no
analysis): `InferenceSession` end to end against ONNX Runtime, in batch items per second. With a
GPU the session runs on ``cuda`` (feeds already on the device) against ONNX Runtime's CUDA
execution provider where onnxruntime-gpu is installed (its feeds and outputs cross the host, as a
plain ``InferenceSession.run`` does; the row says so), else its CPU provider. Without a GPU it is
the ``numpy`` backend against ONNX Runtime's CPU provider, both on this CPU, and the rows say
that. A model row's time is the op time only (wall clock, device synchronized): the baseline runs
on ONNX Runtime's own streams, which no CuPy graph capture or event pair on our stream can time.
Inputs are random (`pygpu_ops.ir.run.random_feed`, symbolic dimensions from ``--dim``, default 1),
and every timed output is checked against ONNX Runtime CPU's.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import os
import platform
import signal
import statistics
import sys
import threading
import time
import traceback
from dataclasses import dataclass, field
from typing import Callable, Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import __version__
from . import linalg as _linalg
from ._runtime import backends

GPU_SIZES = (1024, 2048, 4096, 8192)
GPU_QUICK_SIZES = (1024, 2048)
CPU_SIZES = (256, 512, 1024)
CPU_QUICK_SIZES = (128, 256)


@dataclass
class Case:
    """One timed call. Rows with the same ``group`` share the baseline (the ``vendor`` row)."""

    op: str
    dtype: str
    variant: str
    size: str
    unit: str                     # "TFLOP/s" or "GB/s"
    work: float                   # FLOPs or bytes per call
    fn: Callable[[], object]
    check: Optional[Callable[[], Tuple[bool, float]]] = None   # -> (ok, max error / bound)
    vendor: bool = False
    repeats: Optional[int] = None  # overrides --repeats (e.g. for a naive kernel at 8192)
    group: str = ""
    torch: bool = False           # fn launches PyTorch work (captured with torch.cuda.graph)
    wall: bool = False            # op time only (a whole model; its baseline runs off our stream)


@dataclass
class Env:
    """What a provider needs: the array module, sizes, variants, and whether this is a GPU run."""

    xp: object
    gpu: bool
    sizes: Tuple[int, ...]
    variants: Optional[List[str]]
    quick: bool
    extra: Dict = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# Providers
# ---------------------------------------------------------------------------------------------
def gemm_cases(env: Env) -> Iterable[Case]:
    xp = env.xp
    variants = env.variants or list(_linalg.sgemm_variants())
    unknown = sorted(set(variants) - set(_linalg.sgemm_variants()))
    if unknown:
        raise ValueError(f"bench: unknown SGEMM variants {unknown}; known: {list(_linalg.sgemm_variants())}")
    for dtype in (np.float32, np.float64):
        name = np.dtype(dtype).name
        for n in env.sizes:
            rng = np.random.default_rng(n)
            a = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
            b = xp.asarray(rng.standard_normal((n, n)).astype(dtype))
            c = xp.empty((n, n), dtype=dtype)
            group = f"gemm/{name}/{n}"
            flops = 2.0 * n ** 3
            check = _gemm_checker(xp, a, b, c, dtype)
            if env.gpu:
                lib = "cuBLAS SGEMM" if dtype == np.float32 else "cuBLAS DGEMM"
                yield Case("gemm", name, lib, str(n), "TFLOP/s", flops, lambda a=a, b=b, c=c: xp.matmul(a, b, out=c),
                           vendor=True, group=group)
                rows = [(v, v) for v in variants] if dtype == np.float32 else [("auto", _linalg.DGEMM.label)]
                for variant, label in rows:
                    slow = variant in ("naive", "coalesced") and n > 4096
                    yield Case("gemm", name, label, str(n), "TFLOP/s", flops,
                               lambda a=a, b=b, c=c, v=variant: _linalg.gemm(a, b, variant=v, out=c),
                               check=check, repeats=2 if slow else None, group=group)
            else:
                yield from _cpu_baselines(env, "gemm", name, str(n), "TFLOP/s", flops, group, "numpy.matmul",
                                          lambda a=a, b=b, c=c: np.matmul(a, b, out=c),
                                          lambda torch, a=a, b=b: (lambda ta=torch.from_numpy(a), tb=torch.from_numpy(b):
                                                                   torch.matmul(ta, tb)))
                yield Case("gemm", name, "numpy backend", str(n), "TFLOP/s", flops,
                           lambda a=a, b=b, c=c: _linalg.gemm(a, b, out=c, backend="numpy"),
                           check=check, group=group)


def _gemm_checker(xp, a, b, c, dtype):
    """c (just computed) against float64, within 2 K eps (|a| @ |b|) elementwise; NaN fails."""
    def check():
        a64, b64 = a.astype(np.float64), b.astype(np.float64)
        ref = xp.matmul(a64, b64)
        bound = 2 * a.shape[1] * np.finfo(dtype).eps * xp.matmul(xp.abs(a64), xp.abs(b64))
        ratio = float(xp.max(xp.abs(c.astype(np.float64) - ref) / bound))
        return ratio <= 1.0, ratio  # NaN compares false: a NaN anywhere fails

    return check


def _torch_cuda():
    """PyTorch with CUDA, for the vendor rows (cuDNN / cuBLASLt), or None."""
    try:
        import torch
    except Exception:
        return None
    return torch if torch.cuda.is_available() else None


TORCH_CPU = "torch-cpu"


def _torch_cpu():
    """PyTorch for the no-GPU baseline rows, or None where it is not importable."""
    try:
        import torch
    except Exception:
        return None
    return torch


def _cpu_baselines(env: Env, op: str, dtype: str, size: str, unit: str, work: float, group: str,
                   plain_label: str, plain_fn: Callable[[], object], torch_fn=None) -> Iterable[Case]:
    """The no-GPU baselines of a group: ``torch-cpu`` (the vendor row, at the bench's thread count)
    where PyTorch is importable, and the plain NumPy formulation (the vendor row without PyTorch,
    a plain row beside it otherwise). ``torch_fn(torch)`` makes the PyTorch call."""
    torch = env.extra.get("torch")
    if torch is not None and torch_fn is not None:
        yield Case(op, dtype, TORCH_CPU, size, unit, work, torch_fn(torch), vendor=True, group=group)
    if plain_fn is not None:
        yield Case(op, dtype, plain_label, size, unit, work, plain_fn,
                   vendor=torch is None or torch_fn is None, group=group)


def _bound_checker(xp, got, ref_fn, bound_fn):
    def check():
        ref = ref_fn()
        ratio = float(xp.max(xp.abs(got.astype(np.float64) - ref) / bound_fn(ref)))
        return ratio <= 1.0, ratio

    return check


SOFTMAX_GPU = ((8192, 1024), (8192, 4096), (2048, 16384), (512, 65536))
SOFTMAX_QUICK = ((4096, 1024), (1024, 8192))
SOFTMAX_CPU = ((512, 1024), (128, 8192))


def softmax_cases(env: Env) -> Iterable[Case]:
    from . import normalization as _norm

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    shapes = (SOFTMAX_QUICK if env.quick else SOFTMAX_GPU) if env.gpu else SOFTMAX_CPU
    for rows, L in shapes:
        rng = np.random.default_rng(L)
        host = (rng.standard_normal((rows, L)) * 4).astype(np.float32)
        host[:, :: 97] += 20.0  # outliers: the probabilities are not all tiny
        x = xp.asarray(host)
        y = xp.empty_like(x)
        size, group, nbytes = f"{rows}x{L}", f"softmax/float32/{rows}x{L}", 2.0 * x.size * 4

        def ref(x=x):
            z = x.astype(np.float64)
            z = xp.exp(z - z.max(axis=1, keepdims=True))
            return z / z.sum(axis=1, keepdims=True)

        bound = lambda r, L=L: 4 * L * np.finfo(np.float32).eps * r + 1e-30
        if torch is not None:
            tx = torch.as_tensor(x, device="cuda")
            yield Case("softmax", "float32", "torch.softmax", size, "GB/s", nbytes,
                       lambda tx=tx: torch.softmax(tx, dim=1), vendor=True, torch=True, group=group)
        elif not env.gpu:
            def plain(x=x, y=y):
                np.subtract(x, x.max(axis=1, keepdims=True), out=y)
                np.exp(y, out=y)
                y /= y.sum(axis=1, keepdims=True)
            yield from _cpu_baselines(env, "softmax", "float32", size, "GB/s", nbytes, group, "numpy (plain)", plain,
                                      lambda torch, x=x: (lambda tx=torch.from_numpy(x): torch.softmax(tx, dim=1)))
        variants = ["auto"] if not env.gpu else list(_norm.softmax_variants())
        for v in variants:
            label = "numpy backend" if not env.gpu else v
            holder = {}

            def run(x=x, v=v, holder=holder):
                holder["y"] = _norm.softmax(x, axis=1, variant=v, backend="cuda" if env.gpu else "numpy")

            def check(holder=holder, ref=ref, bound=bound):
                return _bound_checker(xp, holder["y"], ref, bound)()

            slow = env.gpu and v in ("naive", "online") and L > 4096
            yield Case("softmax", "float32", label, size, "GB/s", nbytes, run, check=check,
                       repeats=3 if slow else None, group=group)


POOL_GPU = (32, 64, 112, 112)
POOL_CPU = (4, 32, 56, 56)


def pooling_cases(env: Env) -> Iterable[Case]:
    from . import pooling as _pool

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    N, C, H, W = POOL_GPU if env.gpu else POOL_CPU
    rng = np.random.default_rng(1)
    host = rng.standard_normal((N, C, H, W)).astype(np.float32)
    be = "cuda" if env.gpu else "numpy"
    for layout in ("NCHW", "NHWC"):
        x = xp.asarray(host if layout == "NCHW" else np.ascontiguousarray(host.transpose(0, 2, 3, 1)))
        for kind in ("max", "avg"):
            fn = _pool.max_pool2d if kind == "max" else _pool.avg_pool2d
            size = f"{layout} {N}x{C}x{H}x{W} k3s2p1"
            OH = (H + 2 - 3) // 2 + 1
            OW = (W + 2 - 3) // 2 + 1
            nbytes = 4.0 * (x.size + N * C * OH * OW)
            group = f"{kind}_pool2d/{size}"
            if torch is not None:
                tx = torch.as_tensor(xp.asarray(host), device="cuda")
                if layout == "NHWC":
                    tx = tx.contiguous(memory_format=torch.channels_last)
                tfn = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
                yield Case(f"{kind}_pool2d", "float32", "torch", size, "GB/s", nbytes,
                           lambda tx=tx, tfn=tfn: tfn(tx, 3, 2, 1), vendor=True, torch=True, group=group)
            elif not env.gpu:
                def torch_pool(torch, kind=kind, layout=layout):
                    tx = torch.from_numpy(host)
                    if layout == "NHWC":
                        tx = tx.contiguous(memory_format=torch.channels_last)
                    tfn = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
                    return lambda: tfn(tx, 3, 2, 1)
                yield from _cpu_baselines(env, f"{kind}_pool2d", "float32", size, "GB/s", nbytes, group, "", None,
                                          torch_pool)
            holder = {}

            def run(x=x, fn=fn, layout=layout, holder=holder):
                holder["y"] = fn(x, 3, stride=2, padding=1, layout=layout, backend=be)

            def check(holder=holder, fn=fn, layout=layout):
                want = fn(np.asarray(host if layout == "NCHW" else host.transpose(0, 2, 3, 1)), 3, stride=2,
                          padding=1, layout=layout, backend="numpy")
                got = holder["y"].get() if hasattr(holder["y"], "get") else holder["y"]
                err = float(np.max(np.abs(got.astype(np.float64) - want) / (1e-6 * (1 + np.abs(want)))))
                return err <= 1.0, err

            yield Case(f"{kind}_pool2d", "float32", "numpy backend" if not env.gpu else f"{kind}_pool2d_{layout.lower()}",
                       size, "GB/s", nbytes, run, check=check if env.gpu else None, group=group)


def int8_gemm_cases(env: Env) -> Iterable[Case]:
    from . import quantization as _quant

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    sizes = env.sizes if env.gpu else tuple(n for n in env.sizes if n <= 512)
    for n in sizes:
        rng = np.random.default_rng(n)
        ha = rng.integers(-128, 128, (n, n), dtype=np.int8)
        hb = rng.integers(-128, 128, (n, n), dtype=np.int8)
        a, b = xp.asarray(ha), xp.asarray(hb)
        group, ops = f"int8_gemm/{n}", 2.0 * n ** 3
        rows = rng.choice(n, size=min(n, 16), replace=False)
        want = ha[rows].astype(np.int64) @ hb.astype(np.int64)
        if torch is not None:
            ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
            yield Case("int8_gemm", "int8", "torch._int_mm", str(n), "TOPS", ops,
                       lambda ta=ta, tb=tb: torch._int_mm(ta, tb), vendor=True, torch=True, group=group)
        elif not env.gpu:
            # NumPy has no integer BLAS: the plain route is float64 BLAS (exact below 2**53).
            yield from _cpu_baselines(env, "int8_gemm", "int8", str(n), "TOPS", ops, group, "numpy float64 matmul",
                                      lambda ha=ha, hb=hb: ha.astype(np.float64) @ hb.astype(np.float64),
                                      lambda torch, ha=ha, hb=hb: (lambda ta=torch.from_numpy(ha), tb=torch.from_numpy(hb):
                                                                   torch._int_mm(ta, tb)))
        for v in (_quant.int8_gemm_variants() if env.gpu else ("auto",)):
            holder = {}

            def run(a=a, b=b, v=v, holder=holder):
                holder["c"] = _quant.int8_gemm(a, b, variant=v, backend="cuda" if env.gpu else "numpy")

            def check(holder=holder, rows=rows, want=want):
                c = holder["c"]
                got = (c.get() if hasattr(c, "get") else c)[rows]
                return bool((got == want).all()), float((got != want).sum())

            slow = env.gpu and v == "naive" and n > 4096
            yield Case("int8_gemm", "int8", v if env.gpu else "numpy backend", str(n), "TOPS", ops, run,
                       check=check, repeats=2 if slow else None, group=group)


# ResNet-50's 3x3 convolutions (stride 1, padding 1) at batch 32: (name, C = O, H = W).
RESNET50_3X3 = (("conv2_x", 64, 56), ("conv3_x", 128, 28), ("conv4_x", 256, 14), ("conv5_x", 512, 7))
CONV_BATCH_GPU, CONV_BATCH_CPU = 32, 1


def conv_cases(env: Env) -> Iterable[Case]:
    from . import conv as _conv

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    if torch is not None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
    N = CONV_BATCH_GPU if env.gpu else CONV_BATCH_CPU
    layers = RESNET50_3X3 if env.gpu else RESNET50_3X3[1:3]
    for name, C, H in layers:
        rng = np.random.default_rng(C)
        hx = rng.standard_normal((N, C, H, H)).astype(np.float32)
        hw = (rng.standard_normal((C, C, 3, 3)) / np.sqrt(9 * C)).astype(np.float32)
        hb = rng.standard_normal(C).astype(np.float32)
        flops = 2.0 * N * C * H * H * C * 9
        size = f"{name} {N}x{C}x{H}x{H}"
        for layout in ("NCHW", "NHWC"):
            group = f"conv2d/{layout}/{size}"
            xin = hx if layout == "NCHW" else np.ascontiguousarray(hx.transpose(0, 2, 3, 1))
            win = hw if layout == "NCHW" else np.ascontiguousarray(hw.transpose(0, 2, 3, 1))
            x, w, b = xp.asarray(xin), xp.asarray(win), xp.asarray(hb)
            if torch is not None:
                fmt = torch.contiguous_format if layout == "NCHW" else torch.channels_last
                tx = torch.as_tensor(xp.asarray(hx), device="cuda").contiguous(memory_format=fmt)
                tw = torch.as_tensor(xp.asarray(hw), device="cuda").contiguous(memory_format=fmt)
                tb = torch.as_tensor(b, device="cuda")
                yield Case("conv2d", layout, "cuDNN (torch)", size, "TFLOP/s", flops,
                           lambda tx=tx, tw=tw, tb=tb: torch.relu(torch.nn.functional.conv2d(tx, tw, tb, padding=1)),
                           vendor=True, torch=True, group=group)
            elif not env.gpu:
                def torch_conv(torch, layout=layout, hx=hx, hw=hw, hb=hb):
                    fmt = torch.contiguous_format if layout == "NCHW" else torch.channels_last
                    tx = torch.from_numpy(hx).contiguous(memory_format=fmt)
                    tw = torch.from_numpy(hw).contiguous(memory_format=fmt)
                    tb = torch.from_numpy(hb)
                    return lambda: torch.relu(torch.nn.functional.conv2d(tx, tw, tb, padding=1))
                yield from _cpu_baselines(env, "conv2d", layout, size, "TFLOP/s", flops, group, "", None, torch_conv)
            holder = {}

            def run(x=x, w=w, b=b, layout=layout, holder=holder):
                holder["y"] = _conv.conv2d(x, w, b, padding=1, layout=layout, activation="relu",
                                           backend="cuda" if env.gpu else "numpy")

            def check(holder=holder, layout=layout, hx=hx, hw=hw, hb=hb):
                # float64 reference through the NumPy fallback's path is not independent of the
                # column layout, so compare against a float64 einsum over shifted windows.
                y = holder["y"]
                y = y.get() if hasattr(y, "get") else np.asarray(y)
                if layout == "NHWC":
                    y = y.transpose(0, 3, 1, 2)
                xpad = np.pad(hx.astype(np.float64), ((0, 0), (0, 0), (1, 1), (1, 1)))
                ref = np.zeros(y.shape)
                mag = np.zeros(y.shape)
                for i in range(3):
                    for j in range(3):
                        win = xpad[:, :, i:i + y.shape[2], j:j + y.shape[3]]
                        ref += np.einsum("nchw,oc->nohw", win, hw[:, :, i, j].astype(np.float64), optimize=True)
                        mag += np.einsum("nchw,oc->nohw", np.abs(win), np.abs(hw[:, :, i, j]).astype(np.float64), optimize=True)
                ref = np.maximum(ref + hb[None, :, None, None], 0)
                bound = 2 * (9 * hx.shape[1] + 2) * np.finfo(np.float32).eps * (mag + np.abs(hb)[None, :, None, None])
                ratio = float(np.max(np.abs(y - ref) / (bound + 1e-30)))
                return ratio <= 1.0, ratio

            yield Case("conv2d", layout, "conv_gemm_warptile" if env.gpu else "numpy backend", size, "TFLOP/s",
                       flops, run, check=check, group=group)


RELU_N_GPU, RELU_N_CPU = 1 << 26, 1 << 20
TRANSPOSE_GPU, TRANSPOSE_CPU = (32, 256, 56, 56), (4, 64, 28, 28)


def elementwise_cases(env: Env) -> Iterable[Case]:
    from . import activations as _act
    from . import conv as _conv

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    be = "cuda" if env.gpu else "numpy"
    n = RELU_N_GPU if env.gpu else RELU_N_CPU
    rng = np.random.default_rng(4)
    hx = rng.standard_normal(n).astype(np.float32)
    x = xp.asarray(hx)
    group = f"relu/{n}"
    if torch is not None:
        tx = torch.as_tensor(x, device="cuda")
        yield Case("relu", "float32", "torch.relu", str(n), "GB/s", 8.0 * n, lambda: torch.relu(tx),
                   vendor=True, torch=True, group=group)
    elif not env.gpu:
        yield from _cpu_baselines(env, "relu", "float32", str(n), "GB/s", 8.0 * n, group, "numpy.maximum",
                                  lambda: np.maximum(hx, 0),
                                  lambda torch: (lambda tx=torch.from_numpy(hx): torch.relu(tx)))
    holder = {}

    def run_relu():
        holder["y"] = _act.relu(x, backend=be)

    def check_relu():
        y = holder["y"]
        y = y.get() if hasattr(y, "get") else np.asarray(y)
        return bool((y == np.where(hx > 0, hx, 0)).all()), 0.0

    yield Case("relu", "float32", "relu_vec128" if env.gpu else "numpy backend", str(n), "GB/s", 8.0 * n,
               run_relu, check=check_relu, group=group)

    shape = TRANSPOSE_GPU if env.gpu else TRANSPOSE_CPU
    ht = rng.standard_normal(shape).astype(np.float32)
    t = xp.asarray(ht)
    size = "x".join(map(str, shape))
    group = f"nchw_to_nhwc/{size}"
    if torch is not None:
        tt = torch.as_tensor(t, device="cuda")
        yield Case("nchw_to_nhwc", "float32", "torch channels_last", size, "GB/s", 8.0 * ht.size,
                   lambda: tt.contiguous(memory_format=torch.channels_last), vendor=True, torch=True, group=group)
    elif not env.gpu:
        yield from _cpu_baselines(env, "nchw_to_nhwc", "float32", size, "GB/s", 8.0 * ht.size, group,
                                  "numpy.ascontiguousarray", lambda: np.ascontiguousarray(ht.transpose(0, 2, 3, 1)),
                                  lambda torch: (lambda tt=torch.from_numpy(ht):
                                                 tt.contiguous(memory_format=torch.channels_last)))
    th = {}

    def run_t():
        th["y"] = _conv.nchw_to_nhwc(t, backend=be)

    def check_t():
        y = th["y"]
        y = y.get() if hasattr(y, "get") else np.asarray(y)
        return bool((y == ht.transpose(0, 2, 3, 1)).all()), 0.0

    yield Case("nchw_to_nhwc", "float32", "transpose_tiled" if env.gpu else "numpy backend", size, "GB/s",
               8.0 * ht.size, run_t, check=check_t, group=group)


EMBEDDING = (32000, 512, (32, 128))    # vocab, dim, ids shape: a (batch, sequence) of tokens


def embedding_cases(env: Env) -> Iterable[Case]:
    """Token embedding (ONNX Gather on axis 0): reads the ids and one table row per id, writes as
    many rows. The op's launcher reads a device flag back after the kernel (the out-of-range check),
    so on a GPU its kernel time falls back to events around the call (``kernel_method``)."""
    from . import indexing as _idx

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    vocab, dim, ids_shape = EMBEDDING
    rng = np.random.default_rng(6)
    htable = rng.standard_normal((vocab, dim)).astype(np.float32)
    hids = rng.integers(0, vocab, size=ids_shape).astype(np.int64)
    table, ids = xp.asarray(htable), xp.asarray(hids)
    size = f"{vocab}x{dim}[{'x'.join(map(str, ids_shape))}]"
    group = f"embedding/float32/{size}"
    nbytes = 8.0 * hids.size + 2.0 * 4 * hids.size * dim
    if torch is not None:
        tt, ti = torch.as_tensor(table, device="cuda"), torch.as_tensor(ids, device="cuda")
        yield Case("embedding", "float32", "torch.nn.functional.embedding", size, "GB/s", nbytes,
                   lambda: torch.nn.functional.embedding(ti, tt), vendor=True, torch=True, group=group)
    elif not env.gpu:
        def torch_cpu(t):
            tt, ti = t.as_tensor(htable), t.as_tensor(hids)
            return lambda: t.nn.functional.embedding(ti, tt)

        yield from _cpu_baselines(env, "embedding", "float32", size, "GB/s", nbytes, group, "numpy.take",
                                  lambda: np.take(htable, hids, axis=0), torch_cpu)
    holder = {}

    def run():
        holder["y"] = _idx.embedding(ids, table, backend="cuda" if env.gpu else "numpy")

    def check():
        y = holder["y"]
        y = y.get() if hasattr(y, "get") else np.asarray(y)
        return bool((y == htable[hids]).all()), 0.0

    yield Case("embedding", "float32", _idx.VARIANT if env.gpu else "numpy backend", size, "GB/s", nbytes, run,
               check=check, group=group)


LSTM = (32, 128, 512, 512)     # B, S, E, H: one layer, time-major, float32


def _lstm_loop(x, w_ih, w_hh, b, dtype):
    """A plain LSTM (PyTorch's gate order i, f, g, o), one step at a time in ``dtype``: the CPU
    baseline row (float32) and the reference of the check (float64). Returns (y, h_n, c_n), the
    states (1, B, H) as PyTorch and ``lstm`` return them."""
    x, w_ih, w_hh, b = (a.astype(dtype) for a in (x, w_ih, w_hh, b))
    S, B, _ = x.shape
    H = w_hh.shape[1]
    h, c = np.zeros((B, H), dtype), np.zeros((B, H), dtype)
    y = np.empty((S, B, H), dtype)
    for t in range(S):
        z = x[t] @ w_ih.T + h @ w_hh.T + b
        i, f, o = (1 / (1 + np.exp(-z[:, k * H:(k + 1) * H])) for k in (0, 1, 3))
        c = f * c + i * np.tanh(z[:, 2 * H:3 * H])
        h = y[t] = o * np.tanh(c)
    return y, h[None], c[None]


def lstm_cases(env: Env) -> Iterable[Case]:
    """One LSTM layer, ``torch.nn.LSTM(E, H)`` on x (S, B, E) from zero states: 2*S*B*4H*(E+H)
    FLOPs (the input projection of every step as one GEMM, then per step h @ R^T and the fused
    cell). The vendor row is cuDNN's LSTM through PyTorch on a GPU; without one it is
    ``torch.nn.LSTM`` on the CPU where PyTorch is importable, beside a plain NumPy float32 loop
    (each step x_t @ W^T + h @ R^T), the vendor row without PyTorch.
    The check compares y, h_n and c_n with the same loop in float64: the error must be at most
    twice that of the float32 loop plus a few ulp of the output (flash-attention's criterion)."""
    from . import recurrent as _rnn

    xp = env.xp
    torch = _torch_cuda() if env.gpu else None
    B, S, E, H = LSTM
    rng = np.random.default_rng(8)
    k = 1 / np.sqrt(H)            # PyTorch's initialisation range: gates neither saturated nor flat
    hx = rng.standard_normal((S, B, E)).astype(np.float32)
    hp = {n: rng.uniform(-k, k, shape).astype(np.float32)
          for n, shape in (("w_ih", (4 * H, E)), ("w_hh", (4 * H, H)), ("b_ih", (4 * H,)), ("b_hh", (4 * H,)))}
    size = f"B{B} S{S} E{E} H{H}"
    group = f"lstm/float32/{size}"
    flops = 2.0 * S * B * 4 * H * (E + H)
    def torch_lstm(torch, device):
        """``torch.nn.LSTM(E, H)`` with these weights (w_ih -> weight_ih_l0, b_hh -> bias_hh_l0...)
        and the call on x, on ``device``."""
        mod = torch.nn.LSTM(E, H).to(device)
        with torch.no_grad():
            for n, v in hp.items():
                getattr(mod, f"{'weight' if n[0] == 'w' else 'bias'}{n[1:]}_l0").copy_(torch.as_tensor(v))
        tx = torch.as_tensor(xp.asarray(hx) if device == "cuda" else hx, device=device)

        def run_torch():
            with torch.no_grad():
                return mod(tx)

        return run_torch

    if torch is not None:
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False
        yield Case("lstm", "float32", "cuDNN LSTM (torch)", size, "TFLOP/s", flops, torch_lstm(torch, "cuda"),
                   vendor=True, torch=True, group=group)
    elif not env.gpu:
        yield from _cpu_baselines(env, "lstm", "float32", size, "TFLOP/s", flops, group, "numpy loop",
                                  lambda: _lstm_loop(hx, hp["w_ih"], hp["w_hh"], hp["b_ih"] + hp["b_hh"], np.float32),
                                  lambda t: torch_lstm(t, "cpu"))
    x, dp = xp.asarray(hx), {n: xp.asarray(v) for n, v in hp.items()}
    holder = {}

    def run():
        holder["out"] = _rnn.lstm(x, dp["w_ih"], dp["w_hh"], dp["b_ih"], dp["b_hh"],
                                  backend="cuda" if env.gpu else "numpy")

    def check():
        args = (hx, hp["w_ih"], hp["w_hh"], hp["b_ih"].astype(np.float64) + hp["b_hh"])
        ref = _lstm_loop(*args, np.float64)
        plain = _lstm_loop(*args, np.float32)
        worst = 0.0
        for got, want, f32 in zip(holder["out"], ref, plain):
            got = got.get() if hasattr(got, "get") else np.asarray(got)
            if got.shape != want.shape:
                return False, float("inf")
            bound = 2 * np.abs(f32 - want).max() + 4 * np.finfo(np.float32).eps * np.abs(want).max()
            worst = max(worst, float(np.abs(got - want).max() / bound))
        return worst <= 1.0, worst

    yield Case("lstm", "float32", _rnn.variant_label("lstm") if env.gpu else "numpy backend", size, "TFLOP/s",
               flops, run, check=check, group=group)


MODEL_CHECK_RTOL = 1e-4      # max |ours - ort| / max |ort| per output, float32 tolerance


def model_cases(env: Env) -> Iterable[Case]:
    """``--model``: InferenceSession against ONNX Runtime on one ONNX file (``env.extra``: model, dims)."""
    from .ir import run as _run
    from .ir.session import InferenceSession

    path, dims = env.extra["model"], env.extra["dims"]
    backend = "cuda" if env.gpu else "numpy"
    sess = InferenceSession(path, backend=backend)
    feed = _run.random_feed(sess, dims, seed=0)
    first = feed[sess.graph.inputs[0]] if sess.graph.inputs else np.zeros(())
    batch = int(first.shape[0]) if first.ndim else 1
    stem = os.path.splitext(os.path.basename(path))[0]
    size = f"{stem} " + ",".join("x".join(map(str, v.shape)) for v in feed.values())
    group = f"model/{size}"
    dtype = np.dtype(first.dtype).name
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    ref = None
    if ort is not None:
        ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, feed)
        provider = ("CUDAExecutionProvider" if env.gpu and "CUDAExecutionProvider" in ort.get_available_providers()
                    else "CPUExecutionProvider")
        base = ort.InferenceSession(path, providers=[provider])
        label = {"CUDAExecutionProvider": "onnxruntime CUDA EP (host feeds)",
                 "CPUExecutionProvider": "onnxruntime CPU EP" + (" (no CUDA EP installed)" if env.gpu else "")}
        yield Case("model", dtype, label[provider], size, "items/s", float(batch),
                   lambda: base.run(None, feed), vendor=True, group=group, wall=True)
    dev_feed = {k: env.xp.asarray(v) for k, v in feed.items()}
    holder = {}

    def run_ours():
        holder["out"] = sess.run(None, dev_feed)

    def check():
        worst = 0.0
        for g, w in zip(holder["out"], ref):
            g = _run.to_host(g).astype(np.float64)
            w = np.asarray(w, dtype=np.float64)
            if g.shape != w.shape:
                return False, float("inf")
            if w.size:
                scale = max(float(np.abs(w).max()), np.finfo(np.float32).tiny)
                worst = max(worst, float(np.abs(g - w).max()) / scale / MODEL_CHECK_RTOL)
        return worst <= 1.0, worst

    yield Case("model", dtype, f"InferenceSession ({backend} backend)", size, "items/s", float(batch),
               run_ours, check=check if ref is not None else None, group=group, wall=True)
    if ort is None:
        raise ImportError("onnxruntime is not installed (pip install onnxruntime): no baseline row, "
                          "and the InferenceSession row is unchecked")


PROVIDERS: Dict[str, Callable[[Env], Iterable[Case]]] = {
    "gemm": gemm_cases,
    "conv": conv_cases,
    "elementwise": elementwise_cases,
    "softmax": softmax_cases,
    "pooling": pooling_cases,
    "int8_gemm": int8_gemm_cases,
    "embedding": embedding_cases,
    "lstm": lstm_cases,
}


# ---------------------------------------------------------------------------------------------
# Timing
# ---------------------------------------------------------------------------------------------
KERNEL_GRAPH = "cuda graph"                   # one call captured on a CuPy stream, replayed between events
KERNEL_TORCH_GRAPH = "cuda graph (torch)"     # the same through torch.cuda.graph, for PyTorch rows
KERNEL_EVENTS = "events around the call"      # capture failed: counts the GPU waiting for Python too
KERNEL_TIME = ("kernel ms: one call captured into a CUDA graph, replayed between CUDA events on a "
               "non-blocking stream, L2 flushed before each replay (rows whose kernel_method is "
               f"'{KERNEL_EVENTS}' could not be captured)")
OP_TIME = "op ms: the public call, wall clock until the device is synchronized, L2 flushed before each call"
CPU_OP_TIME = "op ms: the call, wall clock (no GPU: no kernel time)"


@dataclass
class Timing:
    op_ms: List[float]
    kernel_ms: Optional[List[float]] = None     # None without a GPU
    kernel_method: Optional[str] = None
    capture_error: Optional[str] = None         # why the graph capture failed (KERNEL_EVENTS)
    peak: Optional[Dict] = None                 # CPU: memory one call adds at its peak (peak_memory)


def _error(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


#: The CPU timer's pause before each block (seconds), ``--settle`` or ``PYGPU_OPS_BENCH_SETTLE``.
SETTLE_S = 0.2
#: Untimed calls before each block's timed ones, for at least this long (seconds).
WARM_S = 0.02
#: Blocks per case: the timed calls are spread over this many rounds.
ROUNDS = 3


def default_settle() -> float:
    raw = os.environ.get("PYGPU_OPS_BENCH_SETTLE", "").strip()
    try:
        return float(raw) if raw else SETTLE_S
    except ValueError:
        raise ValueError(f"PYGPU_OPS_BENCH_SETTLE must be a number of seconds; got {raw!r}") from None


class CpuTimer:
    """Wall clock of each call: op time only. The cases of one group (ours and its baselines) are
    timed in alternating blocks: in each of `ROUNDS` rounds every case in turn gets a pause
    (``settle_s``), untimed warm-up calls for ``warm_s``, then its share of the timed calls. The
    rounds spread the load of a shared machine over all the cases of a group alike, so their ratio
    means something. Then one more call of each case measures its peak memory (`peak_memory`).

    Why blocks and a pause, not one call of each in turn: two runtimes in one process each keep
    worker threads that spin-wait after a parallel region (PyTorch's OpenMP pool, NumPy's
    OpenBLAS), and on a 2-core machine one's spinning threads take the cores the other's call
    needs. Calling torch-cpu's sgemm 256 between NumPy calls measured 15.3 ms a call here, against
    0.42 ms with the spinning turned off (``OMP_WAIT_POLICY=PASSIVE``), which would in turn slow
    PyTorch's own steady state. The pause lets the previous case's spinning threads go to sleep;
    the warm-up lets this case's pool reach its steady state, as in a loop of calls."""

    description = {"op": CPU_OP_TIME, "kernel": None, "throughput_from": "op"}

    def __init__(self, settle_s: Optional[float] = None, warm_s: float = WARM_S, rounds: int = ROUNDS):
        self.settle_s = default_settle() if settle_s is None else float(settle_s)
        if not self.settle_s >= 0:
            raise ValueError(f"bench: --settle must be a number of seconds >= 0; got {settle_s!r}")
        self.warm_s, self.rounds = float(warm_s), int(rounds)
        self.description = dict(self.description, protocol=(
            f"blocks: {self.rounds} rounds; per case and round a {self.settle_s:g} s pause, "
            f"{self.warm_s:g} s of untimed calls, then its share of the timed calls"))
        self._groups: Dict[str, List[Case]] = {}
        self._done: Dict[int, object] = {}      # id(case) -> Timing or the exception it raised

    def prepare(self, cases: List[Case], repeats: int) -> None:
        """Registers the cases whose group has several, to be timed together on the first call."""
        self._repeats = repeats
        for c in cases:
            if c.group:
                self._groups.setdefault(c.group, []).append(c)

    def _block(self, c: Case, n: int, out: List[float]) -> None:
        if self.settle_s > 0:
            time.sleep(self.settle_s)
        t_end = time.perf_counter() + self.warm_s
        c.fn()
        while time.perf_counter() < t_end:
            c.fn()
        for _ in range(n):
            t0 = time.perf_counter()
            c.fn()
            out.append((time.perf_counter() - t0) * 1e3)

    def _interleaved(self, group: List[Case]) -> None:
        live, out = [], {}
        for c in group:
            try:
                c.fn()
            except Exception as exc:            # that case's row fails; the others go on
                self._done[id(c)] = exc
            else:
                live.append(c)
                out[id(c)] = []
        for r in range(self.rounds):
            for c in live:
                want = c.repeats or self._repeats
                # round r's share: the timed calls split as evenly as the rounds allow
                n = want * (r + 1) // self.rounds - want * r // self.rounds
                if n and id(c) not in self._done:
                    try:
                        self._block(c, n, out[id(c)])
                    except Exception as exc:
                        self._done[id(c)] = exc
        for c in live:
            if id(c) not in self._done:
                self._done[id(c)] = Timing(out[id(c)], peak=peak_memory(c.fn))

    def measure(self, case: Case, repeats: int) -> Timing:
        group = self._groups.get(case.group, [])
        if len(group) > 1 and any(c is case for c in group):
            if id(case) not in self._done:
                self._interleaved(group)
            got = self._done.pop(id(case))
            if isinstance(got, Exception):
                raise got
            return got
        case.fn()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            case.fn()
            out.append((time.perf_counter() - t0) * 1e3)
        return Timing(out, peak=peak_memory(case.fn))


#: What `peak_memory` records, for the JSON's meta.
MEMORY_NOTE = ("peak_traced_bytes: tracemalloc's peak over one call, what NumPy and Python allocate "
               "(PyTorch's allocator is not traced); peak_rss_bytes: the resident set's high-water mark "
               "over one call minus the resident set before it (Linux: VmHWM reset through "
               "/proc/self/clear_refs), which sees PyTorch too but not memory the C allocator reuses "
               "from earlier calls. The table's peak MiB is the traced peak, or for torch-cpu rows the "
               "RSS peak (marked rss)")


def _proc_status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _peak_rss(fn: Callable[[], object]) -> Optional[int]:
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")                        # VmHWM := VmRSS
        before = _proc_status_kib("VmRSS")
    except OSError:                             # not Linux, or not allowed
        return None
    fn()
    return max(0, _proc_status_kib("VmHWM") - before) * 1024


def _peak_traced(fn: Callable[[], object]) -> int:
    import tracemalloc

    started = not tracemalloc.is_tracing()
    if started:
        tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        fn()
        return max(0, tracemalloc.get_traced_memory()[1] - base)
    finally:
        if started:
            tracemalloc.stop()


def peak_memory(fn: Callable[[], object]) -> Dict[str, Optional[int]]:
    """The memory one call of ``fn`` adds at its peak, two ways (`MEMORY_NOTE`), one call each."""
    return {"peak_rss_bytes": _peak_rss(fn), "peak_traced_bytes": _peak_traced(fn)}


class GpuTimer:
    """Kernel time (a captured CUDA graph replayed between events) and op time (the synchronized
    public call), both on one non-blocking stream, the L2 cache overwritten before each run."""

    description = {"op": OP_TIME, "kernel": KERNEL_TIME, "throughput_from": "kernel"}

    def __init__(self, cupy):
        self.cupy = cupy
        rt = cupy.cuda.runtime
        dev = cupy.cuda.Device().id
        try:
            l2 = rt.deviceGetAttribute(rt.cudaDevAttrL2CacheSize, dev)
        except Exception:
            l2 = 64 << 20
        # The ops run on CuPy's current stream (API.md): timing makes this stream current, so the
        # launches are the ones captured and timed. Non-blocking: no implicit sync with stream 0.
        self.stream = cupy.cuda.Stream(non_blocking=True)
        with self.stream:
            self.flush_buf = cupy.empty(max(2 * l2, 1 << 20), dtype=np.uint8)
        self.start, self.stop = cupy.cuda.Event(), cupy.cuda.Event()
        self._torch_stream = None

    def _torch(self, case: Case):
        """PyTorch's current stream set to ours for a PyTorch row (else nothing)."""
        if not case.torch:
            return contextlib.nullcontext()
        import torch

        if self._torch_stream is None:
            self._torch_stream = torch.cuda.ExternalStream(self.stream.ptr)
        return torch.cuda.stream(self._torch_stream)

    def _flush(self, i: int) -> None:
        self.flush_buf.fill(i & 0xFF)   # a write over twice the L2 size, on the timing stream

    def measure(self, case: Case, repeats: int) -> Timing:
        cp = self.cupy
        device = cp.cuda.Device()
        device.synchronize()            # inputs written on other streams are ready
        with self.stream, self._torch(case):
            case.fn()                   # compiles; the pool gets the output block
            case.fn()                   # the pool now holds a free block for the next output too
            op = []
            for i in range(repeats):
                self._flush(i)
                device.synchronize()
                t0 = time.perf_counter()
                case.fn()
                device.synchronize()
                op.append((time.perf_counter() - t0) * 1e3)
            if case.wall:
                return Timing(op)
            replay, method, why = self._capture(case)
            kernel = []
            for i in range(repeats):
                self._flush(i)
                self.start.record(self.stream)
                replay()
                self.stop.record(self.stream)
                self.stop.synchronize()
                kernel.append(cp.cuda.get_elapsed_time(self.start, self.stop))
        return Timing(op, kernel, method, why)

    def _capture(self, case: Case):
        """(replay, kernel_method, capture error): a graph of one call, or the call itself."""
        try:
            if case.torch:
                import torch

                graph = torch.cuda.CUDAGraph()
                with torch.cuda.graph(graph, stream=self._torch_stream):
                    case.fn()
                return graph.replay, KERNEL_TORCH_GRAPH, None
            self.stream.begin_capture()
            try:
                case.fn()
            except BaseException:
                try:
                    self.stream.end_capture()
                except Exception:       # an invalidated capture: the first error says why
                    pass
                raise
            graph = self.stream.end_capture()
            return (lambda: graph.launch(self.stream)), KERNEL_GRAPH, None
        except Exception as exc:
            return case.fn, KERNEL_EVENTS, _error(exc)


COPY_BYTES = 1 << 30


def copy_bandwidth(cupy, timer, repeats: int) -> Dict:
    """Device-to-device copy of 1 GiB, the memory-bound ops' yardstick, measured in this run."""
    n = COPY_BYTES // 4
    src = cupy.ones(n, dtype=np.float32)
    dst = cupy.empty_like(src)
    t = timer.measure(Case("copy", "float32", "cupy.copyto", str(n), "GB/s", 2.0 * n * 4,
                           lambda: cupy.copyto(dst, src)), repeats)
    med = statistics.median(t.kernel_ms)
    return {"bytes": 2.0 * n * 4, "median_ms": med, "GB/s": 2.0 * n * 4 / med / 1e6,
            "kernel_method": t.kernel_method}


def _fp32_peak_tflops(props) -> Optional[float]:
    lanes = {(7, 0): 64, (7, 5): 64, (8, 0): 64}.get((props["major"], props["minor"]), 128)
    clock_khz = props.get("clockRate", 0) or 0
    if not clock_khz:
        return None
    return props["multiProcessorCount"] * lanes * 2 * clock_khz * 1e3 / 1e12


# ---------------------------------------------------------------------------------------------
# Running and reporting
# ---------------------------------------------------------------------------------------------
def _row(case: Case) -> Dict:
    return dict(op=case.op, dtype=case.dtype, variant=case.variant, size=case.size, unit=case.unit,
                vendor=case.vendor, group=case.group)


def _failed(row: Dict, stage: str, exc: BaseException) -> Dict:
    row.update(status="failed", error={"type": type(exc).__name__, "message": str(exc), "stage": stage})
    print(f"\nFAILED: {row['op']} {row['variant']} {row['size']} ({stage}): {_error(exc)}", file=sys.stderr)
    return row


def run_case(case: Case, timer, repeats: int) -> Dict:
    """One row: both times, the throughput, the check; a case that raises is a failed row."""
    row = _row(case)
    try:
        t = timer.measure(case, case.repeats or repeats)
    except Exception as exc:
        return _failed(row, "timing", exc)
    row.update(status="ok", repeats=len(t.op_ms), op_median_ms=statistics.median(t.op_ms),
               op_min_ms=min(t.op_ms), op_max_ms=max(t.op_ms), kernel_method=t.kernel_method,
               kernel_median_ms=None, kernel_min_ms=None, kernel_max_ms=None)
    if t.kernel_ms is not None:
        row.update(kernel_median_ms=statistics.median(t.kernel_ms), kernel_min_ms=min(t.kernel_ms),
                   kernel_max_ms=max(t.kernel_ms))
    if t.capture_error is not None:
        row["capture_error"] = t.capture_error
    if t.peak is not None:
        row.update(t.peak)
    row["value_from"] = "kernel" if t.kernel_ms is not None else "op"
    med = row[f"{row['value_from']}_median_ms"]
    # work per ms -> the unit: FLOPs -> TFLOP/s, bytes -> GB/s, batch items -> items/s
    scale = 1e9 if case.unit in ("TFLOP/s", "TOPS") else 1e-3 if case.unit == "items/s" else 1e6
    row["value"] = case.work / med / scale if med > 0 else float("inf")
    if case.check is not None:
        try:
            ok, err = case.check()
        except Exception as exc:
            return _failed(row, "check", exc)
        row.update(correct=bool(ok), error_ratio=err)
        if not ok:
            print(f"\nWRONG RESULT: {case.op} {case.variant} {case.size}: error {err:.3g} x the bound",
                  file=sys.stderr)
    return row


def run_cases(cases: Iterable[Case], timer, repeats: int, progress: bool = True,
              rows: Optional[List[Dict]] = None) -> List[Dict]:
    """Times every case into ``rows`` (appended as each finishes, so an interrupt keeps them)."""
    cases = list(cases)
    if hasattr(timer, "prepare"):
        timer.prepare(cases, repeats)
    rows = [] if rows is None else rows
    try:
        for i, case in enumerate(cases, 1):
            if progress:
                bar = "#" * (20 * i // len(cases))
                print(f"\r[{bar:<20}] {i}/{len(cases)} {case.op} {case.variant} {case.size}".ljust(79),
                      end="", file=sys.stderr, flush=True)
            rows.append(run_case(case, timer, repeats))
    finally:
        if progress and cases:
            print("\r" + " " * 79 + "\r", end="", file=sys.stderr, flush=True)
    return rows


def finish(meta: Dict, rows: List[Dict]) -> None:
    """The ratios to the vendor row of each group, to FP32 peak and to the copy bandwidth."""
    time_key = {"kernel": "kernel_median_ms", "op": "op_median_ms"}
    ok = [r for r in rows if r.get("status") == "ok"]
    by_group = {r["group"]: r for r in ok if r["vendor"]}
    peak = meta.get("fp32_peak_tflops")
    copy_gbs = meta.get("copy", {}).get("GB/s")
    for r in ok:
        base = by_group.get(r["group"])
        if base is not None and base["value_from"] == r["value_from"]:
            key = time_key[r["value_from"]]
            r["pct_vendor"] = 100.0 * base[key] / r[key]
            r["time_vs_vendor"] = r[key] / base[key] if base[key] > 0 else float("inf")
        if r["unit"] == "TFLOP/s" and r["dtype"] == "float32" and peak:
            r["pct_peak"] = 100.0 * r["value"] / peak
        if r["unit"] == "GB/s" and copy_gbs:
            r["pct_copy"] = 100.0 * r["value"] / copy_gbs


_METHOD_SHORT = {KERNEL_GRAPH: "graph", KERNEL_TORCH_GRAPH: "graph", KERNEL_EVENTS: "events", None: "-"}


def format_rows(rows: List[Dict], timing: Optional[Dict] = None) -> str:
    """The table; ``timing`` (meta["timing"]) gives the header lines saying what each time is."""
    head = ("op", "dtype", "variant", "size", "kernel ms", "timed by", "op ms", "value", "unit",
            "% vendor", "time/vendor", "% peak/copy", "peak MiB", "check")
    lines = [head]
    for r in rows:
        if r.get("status") != "ok":
            err = r.get("error", {})
            msg = f"FAILED {err.get('type', '?')}: {err.get('message', '')}"
            lines.append((r["op"], r["dtype"], r["variant"], r["size"], "-", "-", "-", "-", r["unit"], "-", "-", "-",
                          "-", msg if len(msg) <= 90 else msg[:87] + "..."))
            continue
        pct = f"{r['pct_vendor']:.1f}" if "pct_vendor" in r else "-"
        peak = f"{r['pct_peak']:.1f}" if "pct_peak" in r else f"{r['pct_copy']:.1f}" if "pct_copy" in r else "-"
        check = "-" if "correct" not in r else ("ok" if r["correct"] else "WRONG")
        kernel = "-" if r["kernel_median_ms"] is None else f"{r['kernel_median_ms']:.3f}"
        ratio = f"{r['time_vs_vendor']:.2f}x" if "time_vs_vendor" in r and not r["vendor"] else "-"
        mib = "-"
        if r.get("variant") == TORCH_CPU and r.get("peak_rss_bytes") is not None:
            mib = f"{r['peak_rss_bytes'] / 2**20:.1f} rss"
        elif r.get("peak_traced_bytes") is not None:
            mib = f"{r['peak_traced_bytes'] / 2**20:.1f}"
        lines.append((r["op"], r["dtype"], r["variant"], r["size"], kernel, _METHOD_SHORT[r["kernel_method"]],
                      f"{r['op_median_ms']:.3f}",
                      f"{r['value']:.2f}" if r["unit"] in ("TFLOP/s", "TOPS") else f"{r['value']:.0f}",
                      r["unit"], pct, ratio, peak, mib, check))
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    table = "\n".join("  ".join(c.ljust(w[i]) if i < 3 or i == len(head) - 1 else c.rjust(w[i])
                                for i, c in enumerate(l)).rstrip() for l in lines)
    if not timing:
        return table
    notes = [timing["kernel"] or "kernel ms: not measured (no GPU)", timing["op"],
             f"value and % vendor from the {timing['throughput_from']} time"]
    return "\n".join(notes) + "\n" + table


def plot(rows: List[Dict], folder: str) -> List[str]:
    """One PNG per (op, dtype): throughput against size, one line per variant, the vendor dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in rows if r.get("status") == "ok"]
    os.makedirs(folder, exist_ok=True)
    written = []
    for key in sorted({(r["op"], r["dtype"]) for r in rows}):
        sel = [r for r in rows if (r["op"], r["dtype"]) == key]
        fig, ax = plt.subplots(figsize=(8, 5))
        sizes = list(dict.fromkeys(r["size"] for r in sel))
        numeric = all(z.isdigit() for z in sizes)
        for variant in dict.fromkeys(r["variant"] for r in sel):
            pts = [(int(r["size"]) if numeric else sizes.index(r["size"]), r["value"])
                   for r in sel if r["variant"] == variant]
            vendor = any(r["vendor"] for r in sel if r["variant"] == variant)
            ax.plot(*zip(*pts), "k--" if vendor else "-o", label=variant, linewidth=2 if vendor else 1)
        if numeric:
            ax.set_xscale("log", base=2)
        else:
            ax.set_xticks(range(len(sizes)), sizes, rotation=20, fontsize=8)
        ax.set_xlabel("size (M = N = K)" if key[0] in ("gemm", "int8_gemm") else "shape")
        ax.set_ylabel(f"{sel[0]['unit']} (from the {sel[0]['value_from']} time)")
        ax.set_title(f"{key[0]} {key[1]}")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
        path = os.path.join(folder, f"{key[0]}_{key[1]}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def add_arguments(p) -> None:
    p.add_argument("--ops", nargs="+", choices=sorted(PROVIDERS), help="op families (default: all)")
    p.add_argument("--sizes", type=int, nargs="+", help="problem sizes (GEMM: M = N = K)")
    p.add_argument("--variants", nargs="+", help="SGEMM ladder steps to time (default: all)")
    p.add_argument("--repeats", type=int, default=0, help="timed repeats per case (default 20 GPU, 7 CPU)")
    p.add_argument("--quick", action="store_true", help="small sizes, few repeats")
    p.add_argument("--settle", type=float, default=None, metavar="SECONDS",
                   help="without a GPU: the pause before each block of timed calls (default "
                        f"{SETTLE_S:g}, or PYGPU_OPS_BENCH_SETTLE)")
    p.add_argument("--json", metavar="FILE", help="write the raw results as JSON to FILE ('-' for stdout)")
    p.add_argument("--plot", metavar="DIR", help="write PNG charts into DIR (needs matplotlib)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    p.add_argument("--no-analysis", action="store_true",
                   help="without a GPU, skip the analysis (emulator counts, SASS, modeled time)")
    p.add_argument("--model", metavar="MODEL.onnx",
                   help="time this ONNX model end to end (InferenceSession against ONNX Runtime) "
                        "instead of the op families")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                   help="with --model: a symbolic input dimension, e.g. the batch (repeatable; default 1)")


def _cases(name: str, env: Env, rows: List[Dict]) -> List[Case]:
    """The provider's cases; a provider that raises gives a failed row and the cases it made."""
    cases = []
    provider = model_cases if name == "model" else PROVIDERS[name]
    try:
        for case in provider(env):
            cases.append(case)
    except Exception as exc:
        rows.append(_failed(dict(op=name, dtype="-", variant="(making the cases)", size="-", unit="-",
                                 vendor=False, group=""), "setup", exc))
    return cases


def collect(args, gpu: bool, doc: Dict) -> None:
    """Fills ``doc`` ({"meta", "results"}) in place, so an interrupt leaves what was measured:
    the CUDA kernels with a GPU, the NumPy fallback without."""
    meta, rows = doc["meta"], doc["results"]
    if gpu:
        os.environ.setdefault("CUPY_TF32", "0")
        os.environ.setdefault("NVIDIA_TF32_OVERRIDE", "0")
        import cupy

        repeats = args.repeats or (5 if args.quick else 20)
        props = cupy.cuda.runtime.getDeviceProperties(cupy.cuda.Device().id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        meta.update(backend="cuda", device=name, cc=f"{props['major']}.{props['minor']}",
                    cupy=cupy.__version__, fp32_peak_tflops=_fp32_peak_tflops(props))
        timer = GpuTimer(cupy)
        meta["timing"] = dict(timer.description)
        meta["repeats"] = repeats
        try:
            meta["copy"] = copy_bandwidth(cupy, timer, repeats)
        except Exception as exc:        # no yardstick: the rows go without % of copy
            meta["copy_error"] = {"type": type(exc).__name__, "message": str(exc)}
            print(f"device-to-device copy FAILED: {_error(exc)}", file=sys.stderr)
        env = Env(cupy, True, tuple(args.sizes or (GPU_QUICK_SIZES if args.quick else GPU_SIZES)),
                  args.variants, args.quick)
    else:
        from ._runtime import threads

        repeats = args.repeats or (3 if args.quick else 7)
        timer = CpuTimer(settle_s=args.settle)
        nthreads = threads.num_threads()
        meta.update(backend="numpy", device=f"CPU ({platform.processor() or platform.machine()})",
                    timing=dict(timer.description), repeats=repeats, threads=nthreads,
                    memory=MEMORY_NOTE)
        env = Env(np, False, tuple(args.sizes or (CPU_QUICK_SIZES if args.quick else CPU_SIZES)),
                  args.variants, args.quick)
        torch = None if args.model else _torch_cpu()
        if torch is not None:
            # the baseline at our thread count (PYGPU_OPS_NUM_THREADS or the affinity mask)
            env.extra.update(torch=torch, torch_threads=torch.get_num_threads())
            torch.set_num_threads(nthreads)
            meta["torch"] = torch.__version__
        meta["baseline"] = (f"{TORCH_CPU} (PyTorch {torch.__version__}, {nthreads} threads)" if torch is not None
                            else "plain NumPy/BLAS (PyTorch is not importable)")
    progress = not args.no_progress and sys.stderr.isatty()
    if args.model:
        from .ir.run import parse_dims

        env.extra.update(model=args.model, dims=parse_dims(args.dim))
        meta["model"] = args.model
    try:
        for name in ["model"] if args.model else args.ops or PROVIDERS:
            run_cases(_cases(name, env, rows), timer, repeats, progress=progress, rows=rows)
    finally:
        if "torch" in env.extra:
            env.extra["torch"].set_num_threads(env.extra["torch_threads"])
    if not gpu and not args.no_analysis and not args.model:
        doc["analysis"] = no_gpu_analysis(args, progress)


#: Op families of the no-GPU analysis: the SGEMM ladder and the memory-bound ops.
ANALYSIS_OPS = ("gemm", "softmax", "pooling", "elementwise")


def no_gpu_analysis(args, progress: bool) -> Dict:
    """Without a GPU the bench also shows ``pygpu-ops analyze`` for the SGEMM ladder and the
    memory-bound ops: counts from the emulator and a modeled time, never measurements. Returns
    the analysis document, or ``{"unavailable": why}`` (no C++ compiler for the emulator)."""
    from .analysis import analyze

    why = backends.problem("emulator")
    if why is not None:
        return {"unavailable": f"the emulator is unavailable ({why})"}
    ops = [o for o in ANALYSIS_OPS if not args.ops or o in args.ops]
    if not ops:
        return {"unavailable": f"no op family of the analysis ({', '.join(ANALYSIS_OPS)}) chosen"}
    sizes = args.sizes or ((1024,) if args.quick else None)
    # the ladder without DGEMM: the bench's no-GPU view is the SGEMM ladder
    return analyze.analyze(ops, sizes, args.variants, sample_blocks=4 if args.quick else
                           analyze.DEFAULT_SAMPLE, progress=progress,
                           skip_groups=("dgemm",))


class Terminated(KeyboardInterrupt):
    """SIGTERM (e.g. from ``timeout``), handled as an interrupt so the JSON is still written."""


def _on_sigterm(signum, frame):
    raise Terminated("SIGTERM")


def write_json(doc: Dict, where: str) -> None:
    """``doc`` as indented JSON to ``where`` ('-': stdout), written to a temporary file first."""
    text = json.dumps(doc, indent=1)
    if where == "-":
        print(text)
        return
    tmp = f"{where}.part"
    with open(tmp, "w") as f:
        f.write(text + "\n")
    os.replace(tmp, where)


def _model_usage_error(args) -> Optional[str]:
    if args.model is None:
        if args.dim:
            return "--dim is for --model"
        return None
    if args.ops or args.variants or args.sizes:
        return "--model times the model alone: drop --ops, --variants and --sizes (--dim sets its input dims)"
    if not os.path.isfile(args.model):
        return f"--model {args.model}: no such file"
    from .ir.run import parse_dims

    try:
        parse_dims(args.dim)
    except ValueError as exc:
        return str(exc)
    return None


def main(args) -> int:
    bad = _model_usage_error(args)
    if bad:
        print(f"pygpu-ops bench: {bad}", file=sys.stderr)
        return 2
    why = backends.problem("cuda")
    if args.model:
        print(f"pygpu-ops bench --model: {args.model} end to end, InferenceSession against ONNX Runtime, "
              + ("on the GPU (op time: wall clock, device synchronized)" if why is None else
                 f"no GPU here ({why}): the numpy backend against ONNX Runtime's CPU provider, "
                 f"wall clock on this CPU"))
    elif why is None:
        print("pygpu-ops bench: timing the CUDA kernels against the vendor libraries (TF32 off)")
    else:
        print(f"pygpu-ops bench: no GPU here ({why}); timing the NumPy fallback against PyTorch on "
              f"this CPU ('{TORCH_CPU}' rows, at the same thread count) where it is importable, else "
              f"plain NumPy/BLAS, in alternating blocks per group (emulator runs are never timed), then the "
              f"kernels' analysis: memory "
              f"counts from the emulator, SASS, occupancy and a modeled time, which are counts "
              f"and a model, not measurements.")
    meta = {"pygpu_ops": __version__, "python": platform.python_version(), "numpy": np.__version__,
            "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")}
    doc = {"meta": meta, "results": []}
    status = 0
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _on_sigterm)
    try:
        collect(args, gpu=why is None, doc=doc)
    except KeyboardInterrupt as exc:
        meta["interrupted"] = "SIGTERM" if isinstance(exc, Terminated) else "KeyboardInterrupt"
        status = 143 if isinstance(exc, Terminated) else 130
    except Exception as exc:
        traceback.print_exc()
        meta["error"] = {"type": type(exc).__name__, "message": str(exc)}
        status = 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)
        rows = doc["results"]
        finish(meta, rows)
        if "copy" in meta:
            print(f"device-to-device copy: {meta['copy']['GB/s']:.0f} GB/s")
        print(format_rows(rows, meta.get("timing")))
        analysis = doc.get("analysis")
        if analysis is not None:
            from .analysis import analyze

            print()
            print(f"analysis: {analysis['unavailable']}" if "unavailable" in analysis
                  else analyze.format_table(analysis))
        if args.json:
            write_json(doc, args.json)
    if args.plot:
        try:
            written = plot(rows, args.plot)
            if doc.get("analysis", {}).get("rows"):
                from .analysis import analyze

                written += analyze.plot(doc["analysis"], args.plot)
        except ImportError as exc:
            print(f"--plot: no charts drawn, matplotlib is not importable ({exc}); "
                  f"pip install matplotlib (the 'plot' extra). The JSON has every number.")
        else:
            for path in written:
                print(f"wrote {path}")
    failed = [r for r in rows + doc.get("analysis", {}).get("rows", []) if r.get("status") != "ok"]
    wrong = [r for r in rows if r.get("correct") is False]
    if "interrupted" in meta:
        print(f"pygpu-ops bench: interrupted ({meta['interrupted']}) after {len(rows)} rows", file=sys.stderr)
    if failed or wrong:
        print(f"pygpu-ops bench: {len(failed)} failed, {len(wrong)} wrong", file=sys.stderr)
        status = status or 1
    return status
