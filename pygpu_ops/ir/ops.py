"""One handler per ONNX op, found through `OPS`, a table keyed by op type and opset range.

A handler is ``handler(node, ins, ctx) -> Step``: ``ins`` holds one `Info` per input (None for an
omitted optional input): its shape (ints, or strings for symbolic dimensions), dtype, and, for a
value known on the host, the value itself. The handler checks the attributes (an unsupported value
raises `Unsupported`, which the session turns into a ``NotImplementedError`` naming the op, the
node and the opset), infers the output `Info`s and returns the `Step`: a ``run`` closure that calls
the public op (``po.conv2d``, ``po.gemm``...) with the session's backend, plus the kernel label.

The session calls every handler twice: once when it is created, with the model's symbolic shapes
(this is where unsupported ops and attributes are refused, before anything runs), and once per
input signature, with concrete shapes, to build the plan it then executes. So a handler must give
the same verdict whatever the batch size: a check that depends on a dimension that is symbolic at
creation (e.g. whether ``auto_pad=SAME_UPPER`` with stride 2 pads symmetrically) refuses unless it
can be decided for every value.

Three kinds of step:

* device steps (``run`` set): the op runs on the session's backend (the package's kernels on
  ``emulator`` / ``cuda``, their NumPy fallbacks on ``numpy``); no per-node CPU fallback. Gather
  on a tensor of the model (an embedding table indexed by ids) is one: `ops_indexing`.
* views (``view=True``): Reshape / Flatten / Squeeze / Unsqueeze / Identity / Dropout give the input
  buffer a new shape; no kernel runs and nothing is allocated.
* host steps (``run`` None, every output's ``value`` set): Constant, Shape, and Gather / Slice /
  Cast / Concat / Unsqueeze / Squeeze / Reshape / arithmetic on host values (the int64 shape data
  exporters emit around Reshape), evaluated while the plan is built. Such data is metadata; float
  tensors of the model never take this path unless they are constants reshaped (views).

Limits: 1-D and 2-D Conv (3-D / 4-D inputs), 2-D pooling (4-D inputs), float32 convolutions,
float32 / float64 elsewhere. ``pads`` (begin != end included) and ``auto_pad`` SAME_UPPER /
SAME_LOWER at any stride go to the public ops as ``((top, bottom), (left, right))``, which take
them exactly (ONNX Runtime's semantics for the pools' divisor and ceil_mode windows); at creation,
SAME at stride > 1 on a symbolic spatial dimension leaves the pads and the output size open until
the shapes are known. Pooling pads must be smaller than the effective kernel (ONNX Runtime refuses
pads >= kernel too); larger ones are refused. With ``ceil_mode`` a last window that would start in
the right padding is dropped, as ONNX Runtime and PyTorch (and the pools) do; the ONNX
shape-inference formula alone would keep it. A node with ``attrs["layout"] == "NHWC"`` (set only
by the layout pass, `pygpu_ops.ir.layout`) reads and writes channels-last: Conv (its W already
(O, kh, kw, C/group)), the pools and BatchNormalization then call the NHWC variants and name them
in the kernel label. The elementwise ops (``po.add``..., ``po.batch_norm``, ``po.transpose``,
``po.concat``) are looked up when a node needs them; where the package lacks one the node is
refused.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .graph import Dim, Node, Shape, dim_div, dim_prod, unknown_dim

F32, F64, I64 = np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int64)
FLOATS = (F32, F64)


class Unsupported(NotImplementedError):
    """An op, attribute value or input the package cannot run exactly (raised at session creation)."""


@dataclass
class Info:
    """What is known about a tensor while planning. ``value``: the tensor itself where it is known
    on the host (constants, initializers, shape data), an ``object`` array where it holds symbolic
    dimensions; ``host``: the value can be computed on the host once the input shapes are known
    (``value`` may still be None at creation, when a dimension is symbolic)."""

    shape: Optional[Shape]
    dtype: np.dtype
    value: Optional[np.ndarray] = None
    host: bool = False
    layout: str = ""

    @property
    def rank(self) -> Optional[int]:
        return None if self.shape is None else len(self.shape)


@dataclass
class Ctx:
    opset: int
    backend: str

    def label(self, op: str, variant: str) -> str:
        """The kernel a step runs, named as its NVTX range (``op:variant``)."""
        return f"{op}:{'numpy' if self.backend == 'numpy' else variant}"


@dataclass
class Step:
    outs: List[Info]
    kernel: str
    run: Optional[Callable[[list], list]] = None
    view: bool = False


Handler = Callable[[Node, List[Optional[Info]], Ctx], Step]
#: op type -> [(first opset, last opset, handler)]
OPS: Dict[str, List[Tuple[int, int, Handler]]] = {}
MAX = 10**9


def register(op_type: str, since: int, until: int = MAX):
    def deco(fn):
        OPS.setdefault(op_type, []).append((since, until, fn))
        return fn
    return deco


def lookup(op_type: str, opset: int) -> Handler:
    for lo, hi, fn in OPS.get(op_type, ()):
        if lo <= opset <= hi:
            return fn
    if op_type in OPS:
        spans = ", ".join(f"{lo}.." + ("" if hi == MAX else str(hi)) for lo, hi, _ in OPS[op_type])
        raise Unsupported(f"not supported at this opset (supported opsets: {spans})")
    raise Unsupported("op not supported")


def supported_ops() -> List[Tuple[str, str]]:
    """(op type, opset ranges) for the README's op table."""
    return [(op, ", ".join(f"{lo}+" if hi == MAX else f"{lo}-{hi}" for lo, hi, _ in OPS[op])) for op in sorted(OPS)]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _po():
    import pygpu_ops

    return pygpu_ops


def public_op(name: str):
    """``pygpu_ops.<name>``, looked up now (the elementwise family may be absent from this build)."""
    po = _po()
    if not hasattr(po, name):
        raise Unsupported(f"needs pygpu_ops.{name}, which this build of pygpu_ops does not have")
    return getattr(po, name)


def _want_float(ins: Sequence[Optional[Info]], allowed=FLOATS, names=("X",)) -> np.dtype:
    for info, name in zip(ins, names):
        if info is not None and info.dtype not in allowed:
            raise Unsupported(f"input {name} has dtype {info.dtype}; supported: {', '.join(str(d) for d in allowed)}")
    return ins[0].dtype


def _want_rank(info: Info, ranks, what: str) -> int:
    if info.rank is None or info.rank not in ranks:
        raise Unsupported(f"{what}: input rank {info.rank} not supported (expected {' or '.join(map(str, ranks))})")
    return info.rank


def _host_value(info: Optional[Info], what: str, required: bool = True):
    """The host value of an input that must be a constant (or shape data); None while symbolic."""
    if info is None:
        if required:
            raise ValueError(f"input {what} is required")
        return None
    if not info.host:
        raise Unsupported(f"input {what} must be a constant or computed from shapes; a runtime tensor is not supported")
    return info.value


def _ints(v) -> List[int]:
    return [int(e) for e in np.asarray(v).reshape(-1)]


def _axis(axis: int, rank: int, what: str = "axis") -> int:
    if not -rank <= axis < rank:
        raise ValueError(f"{what} {axis} is out of range for rank {rank}")
    return axis % rank


def _unary(fn_name: str, op_label: str, variant: str):
    def handler(node, ins, ctx):
        _want_float(ins)
        fn = public_op(fn_name)
        x = ins[0]
        return Step([Info(x.shape, x.dtype, layout=x.layout)], ctx.label(op_label, variant),
                    lambda a: [fn(a[0], backend=ctx.backend)])
    return handler


def _all_host(ins) -> bool:
    return all(i is None or i.host for i in ins)


def _host_step(outs: List[Info], what: str) -> Step:
    for o in outs:
        o.host = True
    return Step(outs, f"host:{what}")


def _value_info(value) -> Info:
    """Info of a host value (an object array holds symbolic dims)."""
    a = np.asarray(value)
    if a.dtype == object and all(isinstance(e, (int, np.integer)) for e in a.reshape(-1)):
        a = a.astype(np.int64)
    return Info(tuple(a.shape), I64 if a.dtype == object else a.dtype, a, host=True)


def broadcast_shapes(a: Shape, b: Shape) -> Shape:
    """NumPy broadcasting of two shapes with symbolic dims (a symbolic dim against n > 1 is n)."""
    out = []
    for i in range(1, max(len(a), len(b)) + 1):
        x = a[-i] if i <= len(a) else 1
        y = b[-i] if i <= len(b) else 1
        if x == y or y == 1:
            out.append(x)
        elif x == 1:
            out.append(y)
        elif isinstance(x, int) and isinstance(y, int):
            raise ValueError(f"shapes {a} and {b} do not broadcast")
        else:
            out.append(x if isinstance(x, int) else y if isinstance(y, int) else unknown_dim())
    return tuple(reversed(out))


def _view(x: Info, shape: Shape, kernel: str, host_fn=None) -> Step:
    """A step that gives x a new shape: on the host where x is host data, else a view."""
    if x.host:
        value = None if x.value is None or host_fn is None else host_fn(x.value)
        return _host_step([Info(shape, x.dtype, value)], kernel)
    if any(not isinstance(d, int) for d in shape):
        return Step([Info(shape, x.dtype)], f"view:{kernel}", lambda a: [a[0]], view=True)
    target = tuple(shape)
    return Step([Info(target, x.dtype)], f"view:{kernel}", lambda a: [a[0].reshape(target)], view=True)


# ---------------------------------------------------------------------------------------------
# Convolution and pooling geometry
# ---------------------------------------------------------------------------------------------
def _spatial_pads(node: Node, size: Sequence[Dim], k: Sequence[int], s, d):
    """(head pads, tail pads) per spatial axis from ``pads`` / ``auto_pad``; a pad is None where it
    depends on a symbolic size (SAME at stride > 1)."""
    auto = node.attr("auto_pad", "NOTSET")
    n = len(k)
    if auto == "NOTSET":
        pads = _ints(node.attr("pads", [0] * 2 * n))
        if len(pads) != 2 * n:
            raise ValueError(f"pads has {len(pads)} values; expected {2 * n}")
        return pads[:n], pads[n:]
    if auto == "VALID":
        return [0] * n, [0] * n
    if auto not in ("SAME_UPPER", "SAME_LOWER"):
        raise Unsupported(f"auto_pad={auto!r}")
    heads, tails = [], []
    for i in range(n):
        eff = (k[i] - 1) * d[i] + 1
        if isinstance(size[i], int):
            total = max(0, (-(-size[i] // s[i]) - 1) * s[i] + eff - size[i])
        elif s[i] == 1:
            total = eff - 1       # independent of the size at stride 1
        else:
            heads.append(None)    # known once the size is: every split runs
            tails.append(None)
            continue
        small = total // 2
        heads.append(small if auto == "SAME_UPPER" else total - small)
        tails.append(total - heads[-1])
    return heads, tails


def _out_size(size: Dim, k: int, s: int, d: int, head: int, tail: int, ceil_mode: bool = False) -> Dim:
    eff = (k - 1) * d + 1
    if head is None:
        return unknown_dim()
    if isinstance(size, int):
        num = size + head + tail - eff
        return (-(-num // s) if ceil_mode else num // s) + 1
    if s == 1 and head + tail == eff - 1:
        return size
    return unknown_dim()


def _nhwc(node: Node) -> bool:
    """The node runs channels-last: set by the layout pass (`pygpu_ops.ir.layout`) only."""
    return node.attr("layout") == "NHWC"


def _spatial(x: Info, nhwc: bool) -> Shape:
    return x.shape[1:-1] if nhwc else x.shape[2:]


def _image(n: Dim, c: Dim, spatial: Sequence[Dim], nhwc: bool) -> Shape:
    """An image tensor's shape in the node's layout."""
    return (n, *spatial, c) if nhwc else (n, c, *spatial)


def _geometry_attrs(node: Node, x: Info, k: Sequence[int]):
    n = len(k)
    s = _ints(node.attr("strides", [1] * n))
    d = _ints(node.attr("dilations", [1] * n))
    if len(s) != n or len(d) != n:
        raise ValueError(f"strides / dilations must have {n} values")
    heads, tails = _spatial_pads(node, _spatial(x, _nhwc(node)), k, s, d)
    return s, d, heads, tails


def conv_padding(node: Node, x: Info, k: Sequence[int], nhwc: bool = False):
    """(strides, dilations, padding as conv2d / qconv2d take it: (begin, end) per axis, any split,
    output spatial dims) of a Conv-like node."""
    s, d, heads, tails = _geometry_attrs(node, x, k)
    padding = tuple(zip(heads, tails))
    out = [_out_size(sz, ki, si, di, h, t) for sz, ki, si, di, h, t in zip(_spatial(x, nhwc), k, s, d, heads, tails)]
    return s, d, padding, out


@register("Conv", 1)
def conv(node, ins, ctx):
    x, w, b = ins[0], ins[1], ins[2] if len(ins) > 2 else None
    _want_float([x, w, b], (F32,), ("X", "W", "B"))
    rank = _want_rank(x, (3, 4), "Conv (1-D and 2-D)")
    nhwc = _nhwc(node)
    if nhwc and rank != 4:
        raise Unsupported("layout NHWC: 2-D convolutions only")
    # NHWC (the layout pass): x (N, H, W, C), W transposed once to (O, kh, kw, C/group).
    kdims = w.shape[1:3] if nhwc and w.shape is not None else None if w.shape is None else w.shape[2:]
    if w.shape is None or not all(isinstance(v, int) for v in kdims) or len(w.shape) != rank:
        raise Unsupported(f"W must have static kernel dims and rank {rank}; got {w.shape}")
    k = list(kdims)
    if node.attr("kernel_shape") is not None and _ints(node.attr("kernel_shape")) != k:
        raise ValueError(f"kernel_shape {node.attr('kernel_shape')} differs from W's {k}")
    group = int(node.attr("group", 1))
    # Set only by the pass that fuses Conv + Relu / Clip(0, 6) (FusedConv, pygpu_ops.ir.passes); the
    # ONNX checker refuses the attribute on a Conv from a file.
    from ..conv import CONV_ACTIVATIONS, CONV_GEMM

    act = node.attr("activation")
    if act is not None and act not in CONV_ACTIVATIONS:
        raise Unsupported(f"activation={act!r}: the conv epilogue has {', '.join(CONV_ACTIVATIONS)} only")
    s, d, padding, out = conv_padding(node, x, k, nhwc)
    shape = _image(x.shape[0], w.shape[0], out, nhwc)
    if rank == 3:
        fn = _po().conv1d
        kw = dict(stride=s[0], padding=padding[0], dilation=d[0], groups=group)
    else:
        fn = _po().conv2d
        kw = dict(stride=tuple(s), padding=padding, dilation=tuple(d), groups=group,
                  layout="NHWC" if nhwc else "NCHW")
    kw["activation"] = act
    name = "conv1d" if rank == 3 else "conv2d"
    variant = ("im2col_nhwc+" if nhwc else "") + CONV_GEMM.kernel.symbol
    label = ctx.label(name, variant) + (f"+{act}" if act else "")
    return Step([Info(shape, x.dtype, layout="" if rank == 3 else "NHWC" if nhwc else "NCHW")], label,
                lambda a: [fn(a[0], a[1], a[2] if len(a) > 2 else None, backend=ctx.backend, **kw)])


def _pool_geometry(node: Node, x: Info, kind: str):
    _want_rank(x, (4,), kind + " (2-D pooling)")
    k = _ints(node.attr("kernel_shape", []))
    if len(k) != 2:
        raise ValueError(f"kernel_shape must have 2 values; got {k}")
    s = _ints(node.attr("strides", [1, 1]))
    d = _ints(node.attr("dilations", [1, 1]))
    ceil_mode = bool(node.attr("ceil_mode", 0))
    nhwc = _nhwc(node)
    heads, tails = _spatial_pads(node, _spatial(x, nhwc), k, s, d)
    for h, t, ki, di in zip(heads, tails, k, d):
        if h is not None and max(h, t) >= (ki - 1) * di + 1:
            raise Unsupported(f"pads (head {heads}, tail {tails}) not smaller than the effective kernel {k} "
                              f"(dilations {d}): the pools take smaller pads (ONNX Runtime: smaller than the kernel)")
    out = []
    for sz, ki, si, di, p, t in zip(_spatial(x, nhwc), k, s, d, heads, tails):
        o = _out_size(sz, ki, si, di, p, t, ceil_mode)
        if ceil_mode and isinstance(o, int) and (o - 1) * si >= sz + p:
            o -= 1   # a last window that would start in the right padding is dropped (ONNX Runtime, PyTorch)
        elif ceil_mode and not isinstance(o, int):
            o = unknown_dim()
        out.append(o)
    c = x.shape[-1] if nhwc else x.shape[1]
    return k, s, d, tuple(zip(heads, tails)), ceil_mode, _image(x.shape[0], c, out, nhwc)


@register("MaxPool", 1)
def max_pool(node, ins, ctx):
    x = ins[0]
    _want_float(ins)
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("the Indices output is not supported")
    k, s, d, p, ceil_mode, shape = _pool_geometry(node, x, "MaxPool")
    fn = _po().max_pool2d
    lo = "NHWC" if _nhwc(node) else "NCHW"
    return Step([Info(shape, x.dtype, layout=lo)], ctx.label("max_pool2d", f"max_pool2d_{lo.lower()}"),
                lambda a: [fn(a[0], tuple(k), tuple(s), p, tuple(d), ceil_mode, layout=lo, backend=ctx.backend)])


@register("AveragePool", 7)
def average_pool(node, ins, ctx):
    x = ins[0]
    _want_float(ins)
    if any(v != 1 for v in _ints(node.attr("dilations", [1, 1]))):
        raise Unsupported("dilations other than 1: avg_pool2d has no dilation")
    k, s, _, p, ceil_mode, shape = _pool_geometry(node, x, "AveragePool")
    include = bool(node.attr("count_include_pad", 0))
    fn = _po().avg_pool2d
    lo = "NHWC" if _nhwc(node) else "NCHW"
    return Step([Info(shape, x.dtype, layout=lo)], ctx.label("avg_pool2d", f"avg_pool2d_{lo.lower()}"),
                lambda a: [fn(a[0], tuple(k), tuple(s), p, ceil_mode, include, layout=lo, backend=ctx.backend)])


@register("GlobalAveragePool", 1)
def global_average_pool(node, ins, ctx):
    x = ins[0]
    _want_float(ins)
    _want_rank(x, (4,), "GlobalAveragePool (2-D)")
    fn = _po().global_avg_pool2d
    nhwc = _nhwc(node)
    lo = "NHWC" if nhwc else "NCHW"
    return Step([Info(_image(x.shape[0], x.shape[-1] if nhwc else x.shape[1], (1, 1), nhwc), x.dtype, layout=lo)],
                ctx.label("global_avg_pool2d", f"global_avg_pool2d_{lo.lower()}"),
                lambda a: [fn(a[0], lo, backend=ctx.backend)])


# ---------------------------------------------------------------------------------------------
# GEMM
# ---------------------------------------------------------------------------------------------
def _gemm_variant(dtype) -> str:
    return "dgemm_blocktile_2d" if dtype == F64 else _po().sgemm_variants()[-1]


@register("Gemm", 7)
def gemm(node, ins, ctx):
    a, b = ins[0], ins[1]
    c = ins[2] if len(ins) > 2 else None
    dtype = _want_float([a, b, c], FLOATS, ("A", "B", "C"))
    if a.rank != 2 or b.rank != 2:
        raise ValueError(f"A and B must be 2-D; got {a.shape} and {b.shape}")
    ta, tb = bool(node.attr("transA", 0)), bool(node.attr("transB", 0))
    alpha, beta = float(node.attr("alpha", 1.0)), float(node.attr("beta", 1.0))
    M = a.shape[1] if ta else a.shape[0]
    N = b.shape[0] if tb else b.shape[1]
    if c is None:
        beta = 0.0
    elif c.rank is not None and c.rank > 2:
        raise ValueError(f"C must have rank <= 2; got {c.shape}")
    use_c = beta != 0.0   # beta == 0 never reads C (BLAS; ONNX Runtime's Gemm skips it too)
    fn = _po().gemm
    return Step([Info((M, N), dtype)], ctx.label("gemm", _gemm_variant(dtype)),
                lambda v: [fn(v[0], v[1], v[2] if use_c else None, alpha=alpha, beta=beta if use_c else 0.0,
                              trans_a=ta, trans_b=tb, backend=ctx.backend)])


@register("MatMul", 1)
def matmul(node, ins, ctx):
    a, b = ins
    dtype = _want_float(ins, FLOATS, ("A", "B"))
    if a.rank is None or b.rank is None or 0 in (a.rank, b.rank):
        raise Unsupported("operands of unknown rank or 0-D")
    sa = a.shape if a.rank > 1 else (1,) + a.shape
    sb = b.shape if b.rank > 1 else b.shape + (1,)
    shape = broadcast_shapes(sa[:-2], sb[:-2]) + (sa[-2], sb[-1])
    if a.rank == 1:
        shape = shape[:-2] + shape[-1:]
    if b.rank == 1:
        shape = shape[:-1]
    fn = _po().matmul
    ra, rb = a.rank, b.rank

    def run(v):
        x, y = v
        x = x.reshape(1, -1) if ra == 1 else x     # NumPy's 1-D rules: a row, a column, dropped after
        y = y.reshape(-1, 1) if rb == 1 else y
        r = fn(x, y, backend=ctx.backend)
        if ra == 1:
            r = r.reshape(r.shape[:-2] + r.shape[-1:])
        if rb == 1:
            r = r.reshape(r.shape[:-1])
        return [r]
    return Step([Info(shape, dtype)], ctx.label("matmul", _gemm_variant(dtype)), run)


# ---------------------------------------------------------------------------------------------
# Activations and elementwise
# ---------------------------------------------------------------------------------------------
register("Relu", 6)(_unary("relu", "relu", "relu_vec128"))
register("Sigmoid", 6)(_unary("sigmoid", "sigmoid", "sigmoid"))
register("Tanh", 6)(_unary("tanh", "tanh", "tanh"))


@register("LeakyRelu", 6)
def leaky_relu(node, ins, ctx):
    _want_float(ins)
    alpha = float(node.attr("alpha", 0.01))
    fn, x = _po().leaky_relu, ins[0]
    return Step([Info(x.shape, x.dtype, layout=x.layout)], ctx.label("leaky_relu", "leaky_relu_vec128"),
                lambda a: [fn(a[0], alpha, backend=ctx.backend)])


def _clip(node, x, lo, hi, ctx):
    _want_float([x])
    fn = public_op("clip")
    return Step([Info(x.shape, x.dtype, layout=x.layout)], ctx.label("clip", "clip"),
                lambda a: [fn(a[0], min=lo, max=hi, backend=ctx.backend)])


@register("Clip", 6, 10)
def clip_attrs(node, ins, ctx):
    lo, hi = node.attr("min"), node.attr("max")
    return _clip(node, ins[0], None if lo is None else float(lo), None if hi is None else float(hi), ctx)


@register("Clip", 11)
def clip_inputs(node, ins, ctx):
    bounds = []
    for i, what in ((1, "min"), (2, "max")):
        info = ins[i] if len(ins) > i else None
        v = _host_value(info, what, required=False)
        if info is not None and info.shape not in ((), (1,)):
            raise ValueError(f"{what} must be a scalar; got shape {info.shape}")
        bounds.append(None if v is None else float(np.asarray(v).reshape(-1)[0]))
    return _clip(node, ins[0], bounds[0], bounds[1], ctx)


_BINARY = {"Add": ("add", np.add), "Sub": ("sub", np.subtract), "Mul": ("mul", np.multiply), "Div": ("div", None)}


def _int_div(a, b):
    q = np.abs(a) // np.abs(b)           # ONNX integer Div truncates toward zero (C semantics)
    return np.where((a < 0) != (b < 0), -q, q)


def _binary(op_type):
    name, np_fn = _BINARY[op_type]

    def handler(node, ins, ctx):
        a, b = ins
        if a.shape is None or b.shape is None:
            raise Unsupported("operands of unknown rank")
        shape = broadcast_shapes(a.shape, b.shape)
        if _all_host(ins) and a.dtype.kind in "iu":
            # Shape arithmetic: exact integers, on the host while planning.
            value = None
            if a.value is not None and b.value is not None and a.value.dtype != object and b.value.dtype != object:
                value = (np_fn or _int_div)(a.value, b.value).astype(a.dtype)
            return _host_step([Info(shape, a.dtype, value)], name)
        _want_float(ins, FLOATS, ("A", "B"))
        fn = public_op(name)
        layout = a.layout or b.layout
        return Step([Info(shape, a.dtype, layout=layout)], ctx.label(name, name),
                    lambda v: [fn(v[0], v[1], backend=ctx.backend)])
    return handler


for _op in _BINARY:
    register(_op, 7)(_binary(_op))


@register("BatchNormalization", 7)
def batch_norm(node, ins, ctx):
    x = ins[0]
    _want_float(ins, FLOATS, ("X", "scale", "B", "input_mean", "input_var"))
    if ctx.opset < 9 and int(node.attr("spatial", 1)) != 1:
        raise Unsupported("spatial=0 (per-activation statistics)")
    if int(node.attr("training_mode", 0)) != 0:
        raise Unsupported("training_mode=1 (inference only)")
    if any(o for o in node.outputs[1:]):
        raise Unsupported("the running mean / variance outputs (training only)")
    if x.rank is None or x.rank < 2:
        raise ValueError(f"X must have rank >= 2; got {x.shape}")
    eps = float(node.attr("epsilon", 1e-5))
    fn = public_op("batch_norm")
    lo = "NHWC" if _nhwc(node) else "NCHW"   # one kernel; NHWC: channels on the last axis
    return Step([Info(x.shape, x.dtype, layout=x.layout)], ctx.label("batch_norm", "batch_norm"),
                lambda a: [fn(a[0], a[1], a[2], a[3], a[4], epsilon=eps, layout=lo, backend=ctx.backend)])


def _softmax(log: bool, coerce_2d: bool):
    def handler(node, ins, ctx):
        x = ins[0]
        _want_float(ins)
        if x.rank is None or x.rank == 0:
            raise Unsupported("input of unknown rank or 0-D")
        fn = _po().log_softmax if log else _po().softmax
        name = "log_softmax" if log else "softmax"
        if coerce_2d:
            # Before opset 13 the input is coerced to 2-D (dims before axis x dims from axis) and
            # normalized over the second: one softmax over everything from `axis` on.
            axis = _axis(int(node.attr("axis", 1)), x.rank)
            if axis == x.rank - 1:
                return Step([Info(x.shape, x.dtype)], ctx.label(name, "auto"), lambda a: [fn(a[0], axis=-1, backend=ctx.backend)])

            def run(a):
                src = a[0]
                flat = src.reshape(int(np.prod(src.shape[:axis], dtype=np.int64)), -1)
                return [fn(flat, axis=-1, backend=ctx.backend).reshape(src.shape)]
            return Step([Info(x.shape, x.dtype)], ctx.label(name, "auto"), run)
        axis = _axis(int(node.attr("axis", -1)), x.rank)
        return Step([Info(x.shape, x.dtype)], ctx.label(name, "auto"), lambda a: [fn(a[0], axis=axis, backend=ctx.backend)])
    return handler


register("Softmax", 1, 12)(_softmax(False, coerce_2d=True))
register("Softmax", 13)(_softmax(False, coerce_2d=False))
register("LogSoftmax", 1, 12)(_softmax(True, coerce_2d=True))
register("LogSoftmax", 13)(_softmax(True, coerce_2d=False))


# ---------------------------------------------------------------------------------------------
# Shape ops: views, and host evaluation of shape data
# ---------------------------------------------------------------------------------------------
@register("Identity", 1)
def identity(node, ins, ctx):
    x = ins[0]
    if x.host:
        return _host_step([Info(x.shape, x.dtype, x.value)], "identity")
    return Step([Info(x.shape, x.dtype, layout=x.layout)], "view:identity", lambda a: [a[0]], view=True)


@register("Dropout", 7)
def dropout(node, ins, ctx):
    if len(node.outputs) > 1 and node.outputs[1]:
        raise Unsupported("the mask output is not supported (inference only)")
    mode = ins[2] if len(ins) > 2 else None
    if mode is not None:
        v = _host_value(mode, "training_mode")
        if v is None or bool(np.asarray(v).reshape(-1)[0]):
            raise Unsupported("training_mode must be a constant False (inference only)")
    return identity(node, ins[:1], ctx)


@register("Flatten", 1)
def flatten(node, ins, ctx):
    x = ins[0]
    if x.rank is None:
        raise Unsupported("input of unknown rank")
    axis = int(node.attr("axis", 1))
    axis = axis + x.rank if axis < 0 else axis
    if not 0 <= axis <= x.rank:
        raise ValueError(f"axis {node.attr('axis')} out of range for rank {x.rank}")
    shape = (dim_prod(x.shape[:axis]), dim_prod(x.shape[axis:]))
    return _view(x, shape, "flatten", lambda v: v.reshape(int(np.prod(v.shape[:axis])), -1))


@register("Reshape", 5)
def reshape(node, ins, ctx):
    x, s = ins
    spec = _host_value(s, "shape")
    allowzero = bool(node.attr("allowzero", 0))
    if spec is None:
        if s.shape is None or not isinstance(s.shape[0], int):
            raise Unsupported("the target shape's length is unknown")
        return _view(x, tuple(unknown_dim() for _ in range(s.shape[0])), "reshape")
    spec = list(np.asarray(spec).reshape(-1))
    if x.shape is None:
        raise Unsupported("input of unknown rank")
    out: List[Dim] = []
    for i, v in enumerate(spec):
        if isinstance(v, (int, np.integer)) and v == 0 and not allowzero:
            if i >= len(x.shape):
                raise ValueError(f"shape {spec}: 0 at position {i} copies a dimension the input {x.shape} lacks")
            out.append(x.shape[i])
        else:
            out.append(int(v) if isinstance(v, (int, np.integer)) else str(v))
    if sum(1 for v in out if v == -1) > 1:
        raise ValueError(f"shape {spec} has more than one -1")
    if -1 in out:
        known = dim_prod(v for v in out if v != -1)
        out[out.index(-1)] = dim_div(dim_prod(x.shape), known)
    total, want = dim_prod(x.shape), dim_prod(out)
    if isinstance(total, int) and isinstance(want, int) and total != want:
        raise ValueError(f"cannot reshape {x.shape} ({total} elements) to {tuple(out)}")
    target = tuple(out)
    return _view(x, target, "reshape", lambda v: v.reshape(target))


def _axes_arg(node, ins, from_input: bool, what: str):
    """Squeeze / Unsqueeze axes: an attribute before opset 13, input 1 from it."""
    if ins[0].rank is None:
        raise Unsupported("input of unknown rank")
    if not from_input:
        a = node.attr("axes")
        return None if a is None else _ints(a)
    info = ins[1] if len(ins) > 1 else None
    if info is None:
        return None
    v = _host_value(info, "axes")
    if v is None:
        raise Unsupported(f"{what} axes computed from symbolic shapes")
    return _ints(v)


def squeeze(node, ins, ctx, from_input: bool):
    x = ins[0]
    axes = _axes_arg(node, ins, from_input, "Squeeze")
    if axes is None:
        if any(not isinstance(d, int) for d in x.shape):
            raise Unsupported("Squeeze without axes on a symbolic shape: which dims are 1 depends on the input")
        axes = [i for i, d in enumerate(x.shape) if d == 1]
    axes = sorted({_axis(a, x.rank, "axes") for a in axes})
    for a in axes:
        if isinstance(x.shape[a], int) and x.shape[a] != 1:
            raise ValueError(f"cannot squeeze axis {a} of size {x.shape[a]} (shape {x.shape})")
    shape = tuple(d for i, d in enumerate(x.shape) if i not in axes)
    return _view(x, shape, "squeeze", lambda v: v.reshape([d for i, d in enumerate(v.shape) if i not in axes]))


def unsqueeze(node, ins, ctx, from_input: bool):
    x = ins[0]
    axes = _axes_arg(node, ins, from_input, "Unsqueeze")
    if axes is None:
        raise ValueError("axes are required")
    r = x.rank + len(axes)
    axes = sorted(_axis(a, r, "axes") for a in axes)
    if len(set(axes)) != len(axes):
        raise ValueError(f"axes {axes} repeat")
    dims = iter(x.shape)
    shape = tuple(1 if i in axes else next(dims) for i in range(r))
    return _view(x, shape, "unsqueeze", lambda v: v.reshape(_fill(v.shape, axes, r)))


for _fn in (squeeze, unsqueeze):
    _t = _fn.__name__.capitalize()
    register(_t, 1, 12)(lambda node, ins, ctx, f=_fn: f(node, ins, ctx, from_input=False))
    register(_t, 13)(lambda node, ins, ctx, f=_fn: f(node, ins, ctx, from_input=True))


def _fill(shape, axes, r):
    it = iter(shape)
    return [1 if i in axes else next(it) for i in range(r)]


@register("Transpose", 1)
def transpose(node, ins, ctx):
    x = ins[0]
    if x.rank is None:
        raise Unsupported("input of unknown rank")
    perm = _ints(node.attr("perm", list(range(x.rank))[::-1]))
    if sorted(perm) != list(range(x.rank)):
        raise ValueError(f"perm {perm} is not a permutation of {x.rank} axes")
    shape = tuple(x.shape[p] for p in perm)
    if x.host and x.dtype.kind in "iu":
        return _host_step([Info(shape, x.dtype, None if x.value is None else np.transpose(x.value, perm))], "transpose")
    _want_float(ins)
    fn = public_op("transpose")
    return Step([Info(shape, x.dtype, layout=node.attr("layout", ""))], ctx.label("transpose", "transpose"),
                lambda a: [fn(a[0], tuple(perm), backend=ctx.backend)])


@register("Concat", 4)
def concat(node, ins, ctx):
    parts = [i for i in ins if i is not None]
    if any(p.rank is None for p in parts):
        raise Unsupported("inputs of unknown rank")
    rank = parts[0].rank
    axis = _axis(int(node.attr("axis")), rank)
    size: Dim = 0
    for p in parts:
        if p.rank != rank:
            raise ValueError(f"inputs of ranks {[q.rank for q in parts]}")
        size = size + p.shape[axis] if isinstance(size, int) and isinstance(p.shape[axis], int) else unknown_dim()
    shape = parts[0].shape[:axis] + (size,) + parts[0].shape[axis + 1:]
    if _all_host(parts) and parts[0].dtype.kind in "iu":
        value = None
        if all(p.value is not None for p in parts):
            value = np.concatenate([np.asarray(p.value) for p in parts], axis=axis)
            return _host_step([_value_info(value)], "concat")
        return _host_step([Info(shape, parts[0].dtype, value)], "concat")
    _want_float(parts, FLOATS, [f"inputs[{i}]" for i in range(len(parts))])
    fn = public_op("concat")
    return Step([Info(shape, parts[0].dtype, layout=parts[0].layout)], ctx.label("concat", "concat"),
                lambda a: [fn([v for v in a if v is not None], axis, backend=ctx.backend)])


@register("Constant", 1)
def constant(node, ins, ctx):
    keys = [k for k in node.attrs if k.startswith("value") or k == "sparse_value"]
    if len(keys) != 1:
        raise ValueError(f"exactly one value attribute is required; got {keys}")
    key, v = keys[0], node.attrs[keys[0]]
    if key in ("sparse_value", "value_string", "value_strings"):
        raise Unsupported(f"attribute {key}")
    if key == "value_float":
        v = np.array(v, np.float32)
    elif key == "value_floats":
        v = np.array(v, np.float32).reshape(-1)
    elif key == "value_int":
        v = np.array(v, np.int64)
    elif key == "value_ints":
        v = np.array(v, np.int64).reshape(-1)
    v = np.asarray(v)
    return _host_step([Info(tuple(v.shape), v.dtype, v)], "constant")


@register("Shape", 1)
def shape_op(node, ins, ctx):
    x = ins[0]
    if x.shape is None:
        raise Unsupported("input of unknown rank")
    r = x.rank
    start, end = int(node.attr("start", 0)), node.attr("end")
    start = min(max(start + r if start < 0 else start, 0), r)
    end = r if end is None else min(max(int(end) + r if int(end) < 0 else int(end), 0), r)
    dims = list(x.shape[start:end])
    value = np.array(dims, dtype=object if any(isinstance(d, str) for d in dims) else np.int64)
    return _host_step([Info((len(dims),), I64, value.reshape(len(dims)))], "shape")


def _on_host(ins, what: str) -> None:
    if not _all_host(ins) or ins[0].dtype.kind not in "iu":
        raise Unsupported(f"{what} on {ins[0].dtype} data that is not shape data; supported on integer "
                          f"constants and shape data only")


@register("Gather", 1)
def gather(node, ins, ctx):
    data, idx = ins
    if not (_all_host(ins) and data.dtype.kind in "iu"):
        from .ops_indexing import gather_device   # tensors of the model: the gather_rows kernel

        return gather_device(node, ins, ctx)
    axis = _axis(int(node.attr("axis", 0)), data.rank)
    if data.value is None or idx.value is None:
        shape = None if idx.shape is None else data.shape[:axis] + idx.shape + data.shape[axis + 1:]
        return _host_step([Info(shape, data.dtype)], "gather")
    n = data.value.shape[axis]
    ind = np.asarray(idx.value).astype(np.int64)
    if ((ind < -n) | (ind >= n)).any():
        raise ValueError(f"indices {ind.tolist()} out of range for axis {axis} of size {n}")
    # np.array(..., dtype): a 0-d take of an object array is a bare Python object.
    return _host_step([_value_info(np.array(np.take(data.value, ind, axis=axis), dtype=data.value.dtype))], "gather")


@register("Slice", 1, 9)
def slice_attrs(node, ins, ctx):
    return _slice(node, ins[0], node.attr("starts"), node.attr("ends"), node.attr("axes"), None)


@register("Slice", 10)
def slice_inputs(node, ins, ctx):
    given = [ins[i] if len(ins) > i else None for i in range(1, 5)]
    vals = [_host_value(info, what, required=what in ("starts", "ends"))
            for info, what in zip(given, ("starts", "ends", "axes", "steps"))]
    known = all(v is not None or info is None for v, info in zip(vals, given))
    return _slice(node, ins[0], *vals, known=known)


def _slice(node, data, starts, ends, axes, steps, known=True):
    _on_host([data], "Slice")
    if data.rank is None:
        raise Unsupported("input of unknown rank")
    if starts is None or ends is None or not known or data.value is None:
        return _host_step([Info(tuple(unknown_dim() for _ in range(data.rank)), data.dtype)], "slice")
    starts, ends = _ints(starts), _ints(ends)
    axes = list(range(len(starts))) if axes is None else [_axis(a, data.rank, "axes") for a in _ints(axes)]
    steps = [1] * len(starts) if steps is None else _ints(steps)
    if 0 in steps:
        raise ValueError("steps must be non-zero")
    index = [slice(None)] * data.rank
    for a, s, e, st in zip(axes, starts, ends, steps):
        index[a] = slice(s, e, st)   # Python's clamping is ONNX's (ends past the end, INT64_MAX/MIN)
    return _host_step([_value_info(np.asarray(data.value)[tuple(index)])], "slice")


@register("Cast", 6)
def cast(node, ins, ctx):
    x = ins[0]
    from onnx.helper import tensor_dtype_to_np_dtype   # only reached from an imported model

    to = np.dtype(tensor_dtype_to_np_dtype(int(node.attr("to"))))
    if x.host:
        value = None
        if x.value is not None:
            value = x.value if x.value.dtype == object and to.kind in "iu" else np.asarray(x.value).astype(to)
        return _host_step([Info(x.shape, to, value)], "cast")
    if to == x.dtype:
        return Step([Info(x.shape, x.dtype, layout=x.layout)], "view:cast", lambda a: [a[0]], view=True)
    if to == F32 and x.dtype in (np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)):
        from .ops_quant import int_to_float   # the int8 family's device cast (dequantize at scale 1)

        return int_to_float(x, ctx)
    raise Unsupported(f"Cast of a runtime {x.dtype} tensor to {to}; supported on constants, shape data and "
                      f"int8 / uint8 / int32 -> float32 only")


from . import ops_quant  # noqa: E402,F401  (registers the quantized ops)
from . import ops_recurrent  # noqa: E402,F401  (RNN, GRU, LSTM register themselves)
from . import ops_shape  # noqa: E402,F401  (ConstantOfShape registers itself)
