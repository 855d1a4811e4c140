"""Graph passes: rewrites of the operator IR before it is planned, as ONNX Runtime's graph transformers.

Each pass is a function ``pass_(graph) -> Graph`` with a precondition and a rewrite. Where the
precondition holds nowhere the pass returns the very graph it was given (``result is graph``), so
"did it apply" is an identity test; otherwise it returns a new `Graph` (the input is not mutated:
nodes are replaced, not edited, and folded weights are new initializers, so a weight shared with
another node is left as it was). `optimize` runs `PASSES` in their fixed order; the session runs
it when created with ``optimize=True`` (the default), and ``session.graph`` is the result.

The passes, in order:

1. ``fold_constants``: a node whose outputs are known at creation, whatever the batch size, becomes
   initializers. "Known" is what the op handlers say when run on the declared input shapes: a host
   step (Constant, Shape, and Gather / Slice / Cast / Concat / Unsqueeze / Reshape / arithmetic on
   shape data or constants) whose every output has a value free of symbolic dimensions. So
   ``Shape(x)[1]`` of an (N, C, H, W) input folds to C, but ``Shape(x)[0]`` stays (it is N), and so
   does everything computed from it. Nothing that runs a kernel is folded.
2. ``fuse_qdq`` (`pygpu_ops.ir.passes_quant`): the QDQ format's DequantizeLinear -> Conv / MatMul /
   Gemm (-> Relu) -> QuantizeLinear groups become one int8 node each (QLinearConv, QLinearMatMul,
   or QLinearGemm in domain `DOMAIN`), so no float convolution runs on dequantized values; its
   module docstring lists when a group stays as written.
3. ``fold_batch_norm``: BatchNormalization (inference) after a Conv, or after a Gemm (its channel
   axis 1 is the Gemm's output column), is folded into that node's weights:
   ``a = scale / sqrt(var + eps)``, ``W' = W * a`` per output channel, ``b' = (b - mean) * a + B``
   (for Gemm ``C' = beta * C * a + B - mean * a`` with ``beta = 1``), in float64, each result
   rounded once to the weight's dtype. Only when W, the bias / C and the four BN parameters are
   initializers, the parameters have one value per output channel, and the BN node is the only
   reader of the Conv / Gemm output (which is not a graph output): otherwise the BN runs as the
   channel-wise affine kernel.
4. ``fuse_conv_activation``: Conv followed by Relu, or by Clip with bounds exactly (0, 6), becomes
   one ``FusedConv`` node (domain `DOMAIN`, ONNX Runtime's name for it) with ``activation="relu"`` /
   ``"relu6"``: ``conv2d`` / ``conv1d`` apply the bias and the activation in the GEMM epilogue, so
   the Conv output is never written unactivated. Clip's bounds are attributes before opset 11 and
   constant inputs from it; a Clip with any other bounds (-0.0 included: Clip gives the bound's
   -0.0 where relu6 gives +0.0) stays a Clip node. Both epilogues compare as the Relu / Clip
   kernels do (``v < 0``, ``v > 6``), so the fused output is the unfused one bit for bit, NaN
   included.
5. ``fuse_gemm_activation``: Gemm (+ bias) followed by Relu or Clip(0, 6) becomes one
   ``FusedGemm`` node ``activation(A @ W^T + bias)``, which runs as the NHWC pointwise
   convolution it is (``ops_fused``): ``conv2d`` of A viewed (M, 1, 1, K) with W (N, 1, 1, K)
   gives (M, N) row-major, with the bias and the activation in the conv GEMM's epilogue, and
   reads A in place (no im2col for a pointwise conv). No new GEMM kernel: ``po.gemm`` has an
   ``alpha * AB + beta * C`` epilogue but no activation, and the conv GEMM runs the same
   warp-tiled main loop. Only where that is the Gemm's arithmetic: float32, ``alpha = 1``,
   ``transA = 0``, B an initializer (with ``transB = 0`` it is transposed once into a new
   initializer), C absent, ignored (``beta = 0``) or an initializer per output column (shape (),
   (1,), (N,) or (1, N), made an (N,) bias) added with ``beta = 1``; and the Gemm output read by
   the activation alone and not a graph output. Otherwise Gemm and activation stay two nodes.
6. ``fuse_add_activation``: Add followed by Relu or Clip(0, 6), the residual connection's, becomes
   one ``FusedAdd`` node: ``po.add(a, b, activation=...)`` runs the broadcasting binary kernel
   with the activation applied to each rounded sum, so the sum is written once, activated,
   instead of written, read back and written again. Bit for bit the two nodes' result.
   Passes 4-6 fuse only where the activation is the only reader of the op's output and that
   output is not a graph output (else the unactivated value would be lost).
7. ``eliminate_dead_nodes``: nodes none of whose outputs reaches a graph output are removed (every
   supported op is pure), then initializers that no node reads.

Limits: passes see one graph (no subgraphs: the importer refuses them). Constant folding trusts
the handlers' host evaluation, so it folds exactly what planning would compute on the host anyway;
its gain is a smaller graph and a plan with no host steps for it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import ops, ops_fused
from .graph import Graph, Node
from .passes_quant import fuse_qdq
from .rewrite import DOMAIN, fresh as _fresh, rebuilt as _rebuilt, replace as _replace, sole_reader as _sole_reader

#: ONNX activation op -> the ``activation`` the conv GEMM epilogue takes for it (``conv.py``'s
#: ``CONV_ACTIVATIONS``). A Clip is "relu6" only with bounds exactly `RELU6_BOUNDS`; any other Clip
#: stays a Clip node (see `epilogue_activation`).
CONV_EPILOGUES = {"Relu": "relu", "Clip": "relu6"}
RELU6_BOUNDS = (0.0, 6.0)

#: Handlers of the fused ops the passes create, keyed by op type (domain `DOMAIN`). FusedConv is a
#: Conv whose node carries ``activation``; the Conv handler passes it to the epilogue. FusedGemm and
#: FusedAdd are in ``ops_fused``, the int8 nodes of `fuse_qdq` in ``ops_quant``.
HANDLERS: Dict[str, ops.Handler] = {"FusedConv": ops.conv, "FusedGemm": ops_fused.fused_gemm,
                                     "FusedAdd": ops_fused.fused_add, "QLinearConv": ops.ops_quant.qlinear_conv,
                                     "QLinearGemm": ops.ops_quant.qlinear_gemm}


def handler(node: Node, opset: int) -> ops.Handler:
    """The handler that runs ``node``: a fused op of `DOMAIN`, or the ONNX op table's entry."""
    if node.domain == DOMAIN:
        if node.op_type not in HANDLERS:
            raise ops.Unsupported(f"no fused op {node.op_type!r} in domain {DOMAIN!r}")
        return HANDLERS[node.op_type]
    return ops.lookup(node.op_type, opset)


# ---------------------------------------------------------------------------------------------
# 1. Constant folding
# ---------------------------------------------------------------------------------------------
def fold_constants(graph: Graph) -> Graph:
    """Host steps whose outputs are known for every batch size become initializers."""
    from .session import declared_feeds, walk   # the session imports this module

    steps, env = walk(graph, declared_feeds(graph), "numpy")
    folded: Dict[str, np.ndarray] = {}
    keep: List[Node] = []
    for node, step in steps:
        outs = [o for o in node.outputs if o]
        known = [env[o].value for o in outs]
        # A host step has no run closure and is no view; its value is None (or an object array
        # holding symbolic dimensions) where it depends on the input shapes.
        if (step.run is None and not step.view and outs
                and all(v is not None and np.asarray(v).dtype != object for v in known)):
            for o, v in zip(outs, known):
                folded[o] = np.array(v, dtype=env[o].dtype, order="C")   # not ascontiguousarray: it makes 0-d 1-d
        else:
            keep.append(node)
    if not folded:
        return graph
    return _rebuilt(graph, keep, {**graph.initializers, **folded})


# ---------------------------------------------------------------------------------------------
# 2. BatchNormalization folding
# ---------------------------------------------------------------------------------------------
def _bn_affine(graph: Graph, bn: Node, channels: int) -> Optional[Tuple[np.ndarray, np.ndarray]]:
    """(a, d) in float64 with ``BN(y) = a * y + d`` per channel, or None where the node is not an
    inference BN on constant per-channel parameters of length ``channels``."""
    if len(bn.inputs) < 5 or any(o for o in bn.outputs[1:]) or int(bn.attr("training_mode", 0)) != 0:
        return None
    if graph.opset < 9 and int(bn.attr("spatial", 1)) != 1:
        return None
    params = [graph.initializers.get(n) for n in bn.inputs[1:5]]
    if any(p is None or p.shape != (channels,) or p.dtype.kind != "f" for p in params):
        return None
    scale, bias, mean, var = (p.astype(np.float64) for p in params)
    a = scale / np.sqrt(var + float(bn.attr("epsilon", 1e-5)))
    return a, bias - mean * a


def _fold_into_conv(graph: Graph, conv: Node, bn: Node, taken: set):
    w = graph.initializers.get(conv.input(1))
    b_name = conv.input(2)
    b = graph.initializers.get(b_name) if b_name else None
    if w is None or w.ndim < 3 or (b_name and b is None):
        return None
    ad = _bn_affine(graph, bn, w.shape[0])
    if ad is None:
        return None
    a, d = ad
    w2 = w.astype(np.float64) * a.reshape((-1,) + (1,) * (w.ndim - 1))
    b2 = (0.0 if b is None else b.astype(np.float64)) * a + d
    names = [_fresh(graph, f"{conv.input(1)}_bnfold", taken), _fresh(graph, f"{conv.name}_bias_bnfold", taken)]
    node = Node(conv.op_type, conv.name, [conv.input(0)] + names, list(bn.outputs[:1]), dict(conv.attrs), conv.domain)
    return node, {names[0]: w2.astype(w.dtype), names[1]: b2.astype(w.dtype)}


def _fold_into_gemm(graph: Graph, gemm: Node, bn: Node, taken: set):
    b = graph.initializers.get(gemm.input(1))
    c_name = gemm.input(2)
    c = graph.initializers.get(c_name) if c_name else None
    if b is None or b.ndim != 2 or (c_name and c is None):
        return None
    trans_b = bool(gemm.attr("transB", 0))
    ad = _bn_affine(graph, bn, b.shape[0] if trans_b else b.shape[1])
    if ad is None:
        return None
    a, d = ad
    # Output column j is alpha * A @ B[:, j] (B[j, :] with transB): scale that column of B by a[j].
    b2 = b.astype(np.float64) * (a[:, None] if trans_b else a[None, :])
    beta = float(gemm.attr("beta", 1.0))
    c2 = d if c is None or beta == 0.0 else beta * c.astype(np.float64) * a + d
    names = [_fresh(graph, f"{gemm.input(1)}_bnfold", taken), _fresh(graph, f"{gemm.name}_C_bnfold", taken)]
    attrs = {**gemm.attrs, "beta": 1.0}
    node = Node(gemm.op_type, gemm.name, [gemm.input(0)] + names, list(bn.outputs[:1]), attrs, gemm.domain)
    return node, {names[0]: b2.astype(b.dtype), names[1]: np.asarray(c2).astype(b.dtype)}


_BN_TARGETS = {"Conv": _fold_into_conv, "Gemm": _fold_into_gemm}


def fold_batch_norm(graph: Graph) -> Graph:
    """BatchNormalization folded into the Conv / Gemm before it (channel-wise, float64 then rounded)."""
    out = graph
    taken: set = set()
    while True:
        for bn in out.nodes:
            if bn.op_type != "BatchNormalization" or bn.domain:
                continue
            src = out.producer(bn.input(0))
            if src is None or src.domain or src.op_type not in _BN_TARGETS or not _sole_reader(out, bn.input(0), bn):
                continue
            folded = _BN_TARGETS[src.op_type](out, src, bn, taken)
            if folded is not None:
                out = _replace(out, [src, bn], *folded)
                break
        else:
            return out


# ---------------------------------------------------------------------------------------------
# 3-5. Activations into the epilogue of the op before them
# ---------------------------------------------------------------------------------------------
def _scalar_init(graph: Graph, name: str) -> Optional[float]:
    """The value of a one-element initializer, or None (no such input, or not a constant)."""
    v = graph.initializers.get(name) if name else None
    if v is None or v.size != 1 or v.dtype.kind != "f":
        return None
    return float(v.reshape(-1)[0])


def epilogue_activation(graph: Graph, node: Node) -> Optional[str]:
    """The epilogue ``activation`` that computes ``node`` exactly, or None: Relu is "relu", Clip with
    bounds exactly (0, 6) is "relu6" (attributes before opset 11, constant inputs from it). Both
    are ``v < 0 ? 0 : v`` (and ``v > 6 ? 6 : v``), the Clip kernel's comparisons, so NaN stays NaN."""
    if node.domain or node.op_type not in CONV_EPILOGUES:
        return None
    if node.op_type == "Clip":
        if graph.opset < 11:
            bounds = (node.attr("min"), node.attr("max"))
            bounds = tuple(None if b is None else float(b) for b in bounds)
        else:
            bounds = (_scalar_init(graph, node.input(1)), _scalar_init(graph, node.input(2)))
        if bounds != RELU6_BOUNDS or math.copysign(1.0, bounds[0]) < 0:
            return None
    return CONV_EPILOGUES[node.op_type]


def _fuse_into(graph: Graph, sources, make) -> Graph:
    """Each epilogue activation whose input is the output of a ``sources`` op read by it alone, fused:
    ``make(graph, src, act, activation, taken)`` gives (fused node, new initializers) or None."""
    out = graph
    taken: set = set()
    while True:
        for act in out.nodes:
            activation = epilogue_activation(out, act)
            if activation is None:
                continue
            src = out.producer(act.input(0))
            if src is None or src.domain or src.op_type not in sources or not _sole_reader(out, act.input(0), act):
                continue
            fused = make(out, src, act, activation, taken)
            if fused is not None:
                out = _replace(out, [src, act], *fused)
                break
        else:
            return out


def _fused_conv(graph, conv, act, activation, taken):
    attrs = {**conv.attrs, "activation": activation}
    return Node("FusedConv", conv.name, list(conv.inputs), list(act.outputs), attrs, DOMAIN), {}


def fuse_conv_activation(graph: Graph) -> Graph:
    """Conv + Relu -> FusedConv(activation="relu"), Conv + Clip(0, 6) -> FusedConv(activation="relu6")."""
    return _fuse_into(graph, ("Conv",), _fused_conv)


def _fused_gemm(graph, gemm, act, activation, taken):
    """FusedGemm (A, W (N, K), bias (N,)) of a Gemm whose result is ``A @ B (+ C)`` exactly as the
    pointwise conv computes it, else None: float32, alpha 1, no transA, B an initializer, and C
    absent, ignored (beta 0) or a per-column initializer added with beta 1."""
    # A's dtype is declared only where A is a graph input; ONNX's Gemm types A, B and C alike, so
    # B's float32 says A's (a FusedGemm handed another A refuses it at session creation).
    a_t = graph.tensors.get(gemm.input(0))
    b = graph.initializers.get(gemm.input(1))
    if ((a_t is not None and a_t.dtype != np.float32) or b is None or b.dtype != np.float32 or b.ndim != 2
            or float(gemm.attr("alpha", 1.0)) != 1.0 or int(gemm.attr("transA", 0))):
        return None
    trans_b = bool(gemm.attr("transB", 0))
    n = b.shape[0] if trans_b else b.shape[1]
    inits: Dict[str, np.ndarray] = {}
    w_name = gemm.input(1)
    if not trans_b:    # the conv takes W (N, K): B transposed once, here, into a new initializer
        w_name = _fresh(graph, f"{gemm.input(1)}_T", taken)
        inits[w_name] = np.ascontiguousarray(b.T)
    inputs = [gemm.input(0), w_name]
    c_name = gemm.input(2)
    beta = float(gemm.attr("beta", 1.0))
    if c_name and beta != 0.0:
        c = graph.initializers.get(c_name)
        if beta != 1.0 or c is None or c.dtype != np.float32 or c.shape not in ((), (1,), (n,), (1, n)):
            return None
        if c.shape != (n,):   # a scalar or a (1, N) row: the same values as the (N,) bias
            bias_name = _fresh(graph, f"{gemm.name}_bias", taken)
            inits[bias_name] = np.ascontiguousarray(np.broadcast_to(c.reshape(-1), (n,)))
            c_name = bias_name
        inputs.append(c_name)
    node = Node("FusedGemm", gemm.name, inputs, list(act.outputs), {"activation": activation}, DOMAIN)
    return node, inits


def fuse_gemm_activation(graph: Graph) -> Graph:
    """Gemm (+ bias) + Relu / Clip(0, 6) -> FusedGemm, where the Gemm is a pointwise conv (`_fused_gemm`)."""
    return _fuse_into(graph, ("Gemm",), _fused_gemm)


def _fused_add(graph, add, act, activation, taken):
    return Node("FusedAdd", add.name, list(add.inputs), list(act.outputs), {"activation": activation}, DOMAIN), {}


def fuse_add_activation(graph: Graph) -> Graph:
    """Add + Relu / Clip(0, 6) (a residual's) -> FusedAdd: ``po.add(a, b, activation=...)``."""
    return _fuse_into(graph, ("Add",), _fused_add)


# ---------------------------------------------------------------------------------------------
# 6. Dead nodes
# ---------------------------------------------------------------------------------------------
def eliminate_dead_nodes(graph: Graph) -> Graph:
    """Nodes whose outputs reach no graph output, then initializers no node reads."""
    live = set(graph.outputs)
    keep: List[Node] = []
    for n in reversed(graph.nodes):
        if any(o in live for o in n.outputs if o):
            keep.append(n)
            live.update(i for i in n.inputs if i)
    inits = {k: v for k, v in graph.initializers.items() if k in live}
    if len(keep) == len(graph.nodes) and len(inits) == len(graph.initializers):
        return graph
    return _rebuilt(graph, keep[::-1], inits)


# ---------------------------------------------------------------------------------------------
# The fixed list
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pass:
    name: str
    rewrite: Callable[[Graph], Graph]


#: The passes `optimize` runs, in this order: folding constants first turns Constant weights into
#: initializers the BN fold and the QDQ fusion (`passes_quant`) can read; the BN fold runs before the
#: activation fusions so that Conv + BN + Relu becomes one FusedConv (Gemm + BN + Relu one
#: FusedGemm); dead nodes last, after the folds and fusions have orphaned shape subgraphs and Clip
#: bounds.
PASSES: Tuple[Pass, ...] = (
    Pass("fold_constants", fold_constants),
    Pass("fuse_qdq", fuse_qdq),
    Pass("fold_batch_norm", fold_batch_norm),
    Pass("fuse_conv_activation", fuse_conv_activation),
    Pass("fuse_gemm_activation", fuse_gemm_activation),
    Pass("fuse_add_activation", fuse_add_activation),
    Pass("eliminate_dead_nodes", eliminate_dead_nodes),
)


def optimize(graph: Graph, passes: Sequence[Pass] = PASSES) -> Tuple[Graph, List[str]]:
    """The graph after ``passes``, in order, and the names of those that changed it."""
    applied = []
    for p in passes:
        new = p.rewrite(graph)
        if new is not graph:
            applied.append(p.name)
            graph = new
    return graph, applied
