"""Handlers of the fused ops the graph passes create (domain ``pygpu_ops``; never in a model file).

They are not in the ONNX op table (`ops.OPS`, the README's op table): ``passes.HANDLERS`` maps
their op types to these functions, and only the passes build such nodes, from nodes the ONNX
handlers have already accepted. Each still checks what it relies on, so a hand-built node with
other inputs is refused with `Unsupported` rather than run wrongly.

* ``FusedGemm`` (inputs ``A`` (M, K), ``W`` (N, K), optional ``bias`` (N,); attribute
  ``activation``): ``activation(A @ W^T + bias)`` in float32, the Gemm + bias + Relu / Clip(0, 6) of
  the model. It runs as the NHWC pointwise convolution it is: ``conv2d`` of A viewed as
  (M, 1, 1, K) with the weights viewed as (N, 1, 1, K) gives (M, 1, 1, N), the (M, N) result in
  row-major order, with the bias and the activation in the conv GEMM's epilogue. The conv2d NHWC
  path multiplies A by W^T in the same warp-tiled GEMM as ``po.gemm`` and reads A in place for a
  pointwise convolution (no im2col), so nothing is copied that the plain Gemm would not read.
* ``FusedAdd`` (inputs ``A``, ``B``; attribute ``activation``): ``activation(A + B)`` with NumPy
  broadcasting, float32 or float64, the residual Add + Relu / Clip(0, 6): ``po.add(...,
  activation=)``, one pass of the broadcasting binary kernel instead of two.
"""
from __future__ import annotations

from .ops import F32, FLOATS, Info, Step, Unsupported, _po, _want_float, broadcast_shapes, public_op


def _want(info, what: str, rank: int) -> None:
    if info is None or info.dtype != F32 or info.rank != rank:
        got = "missing" if info is None else f"{info.dtype} of rank {info.rank}"
        raise Unsupported(f"{what} must be float32 of rank {rank}; got {got}")


def _dims_agree(x, y, what: str) -> None:
    if isinstance(x, int) and isinstance(y, int) and x != y:
        raise ValueError(f"{what}: {x} != {y}")


def fused_gemm(node, ins, ctx) -> Step:
    from ..conv import CONV_ACTIVATIONS, CONV_GEMM

    a, w = ins[0], ins[1]
    bias = ins[2] if len(ins) > 2 else None
    _want(a, "A", 2)
    _want(w, "W", 2)
    if bias is not None:
        _want(bias, "bias", 1)
        _dims_agree(bias.shape[0], w.shape[0], "bias length and W's rows (N)")
    _dims_agree(a.shape[1], w.shape[1], "A's columns and W's columns (K)")
    act = node.attr("activation")
    if act not in CONV_ACTIVATIONS:
        raise Unsupported(f"activation={act!r}: the conv epilogue has {', '.join(CONV_ACTIVATIONS)}")
    fn = _po().conv2d

    def run(v):
        x, wt = v[0], v[1]
        (m, k), n = x.shape, wt.shape[0]
        y = fn(x.reshape(m, 1, 1, k), wt.reshape(n, 1, 1, k), v[2] if len(v) > 2 else None, layout="NHWC",
               activation=act, backend=ctx.backend)
        return [y.reshape(m, n)]
    label = ctx.label("conv2d", CONV_GEMM.kernel.symbol) + f"+{act}"
    return Step([Info((a.shape[0], w.shape[0]), F32)], label, run)


def fused_add(node, ins, ctx) -> Step:
    from ..elementwise import ADD_ACTIVATIONS

    a, b = ins
    if a.shape is None or b.shape is None:
        raise Unsupported("operands of unknown rank")
    _want_float(ins, FLOATS, ("A", "B"))
    act = node.attr("activation")
    if act not in ADD_ACTIVATIONS:
        raise Unsupported(f"activation={act!r}: add's fused activations are {', '.join(ADD_ACTIVATIONS)}")
    fn = public_op("add")
    return Step([Info(broadcast_shapes(a.shape, b.shape), a.dtype, layout=a.layout or b.layout)],
                ctx.label("add", "add") + f"+{act}", lambda v: [fn(v[0], v[1], activation=act, backend=ctx.backend)])
