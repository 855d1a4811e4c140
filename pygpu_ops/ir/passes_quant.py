"""``fuse_qdq``: the QDQ format's Conv / MatMul / Gemm run as one int8 kernel each.

ONNX Runtime's ``quantize_static`` (``QuantFormat.QDQ``) writes a quantized model as the float model
with QuantizeLinear / DequantizeLinear pairs on every tensor: a float Conv reads
``DequantizeLinear(x_q)`` and ``DequantizeLinear(W_q)`` (and a bias ``DequantizeLinear(B_int32)``),
and its output, optionally through a Relu, is quantized again by a QuantizeLinear. Run as written,
that is a float convolution on dequantized values. This pass recognises the pattern and replaces
the whole group by one node that reads the 8-bit tensors and writes the 8-bit output:

* Conv -> ``QLinearConv`` (``po.qconv2d``; with a Relu in between, the node carries
  ``activation="relu"`` and lives in domain `rewrite.DOMAIN`: the epilogue clamps at the output
  zero point, which is exactly ``quantize(relu(v))`` because quantization is monotone and maps 0.0 to
  the zero point);
* MatMul -> ``QLinearMatMul`` (``po.qlinear_matmul``; no Relu epilogue there, so MatMul + Relu is
  not fused);
* Gemm (``transA=0``, ``alpha=beta=1``) -> ``QLinearGemm`` (domain `rewrite.DOMAIN`): ``po.qconv2d``
  as a 1 x 1 convolution of the (M, K, 1, 1) view of A, which gives the int32 bias and the Relu
  epilogue that ``qlinear_matmul`` lacks. With ``transB=0`` the weight is transposed into a new
  initializer.

The result differs from the graph as written only by the rounding of the float convolution the
fusion removes: the int8 kernels sum exactly, then requantize in float32 (quantization.py's
module docstring), which is what ONNX Runtime's own QDQ fusion runs.

Preconditions (where one fails the group runs as written, DequantizeLinear then the float op):

* the DequantizeLinear outputs, the float op's output and the Relu's output each have exactly one
  reader and are not graph outputs;
* every scale and zero point is an initializer; activations are per tensor; the weight is an
  8-bit initializer, per tensor or per output channel (Conv and Gemm ``transB=1``: axis 0; MatMul and
  Gemm ``transB=0``: axis 1); Conv and Gemm weights are int8 with zero point 0 (what ``qconv2d``
  takes); A of MatMul has rank >= 2, Conv's input rank 4;
* a bias is a DequantizeLinear of an int32 initializer with zero point 0 whose scale equals
  ``float32(x_scale * w_scale)`` element for element (then its int32 values are the bias the
  epilogue adds exactly); any other bias (a float one) leaves the group as written.
"""
from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .graph import Graph, Node
from .rewrite import DOMAIN, fresh, ranks, replace, sole_reader

I8, U8, I32 = np.dtype(np.int8), np.dtype(np.uint8), np.dtype(np.int32)


def _const(graph: Graph, name: str) -> Optional[np.ndarray]:
    return graph.initializers.get(name) if name else None


def _dq(graph: Graph, tensor: str, reader: Node, opset: int):
    """(q input, scale, zero point, axis or None) of the DequantizeLinear writing ``tensor`` when it
    has constant parameters and ``reader`` as its only reader; else None."""
    d = graph.producer(tensor)
    if d is None or d.op_type != "DequantizeLinear" or d.domain or not sole_reader(graph, tensor, reader):
        return None
    return _qparams(graph, d, opset)


def _qparams(graph: Graph, node: Node, opset: int):
    """(data input, scale, zero point, axis, the node's input names) of a Q / DQ node with
    initializer parameters, or None."""
    if int(node.attr("block_size", 0)) != 0:
        return None
    s = _const(graph, node.input(1))
    z = _const(graph, node.input(2)) if node.input(2) else np.zeros((), U8)
    if s is None or z is None or s.dtype != np.float32 or z.dtype not in (I8, U8, I32) or s.ndim > 1:
        return None
    axis = None
    if s.size > 1:
        if opset < 13:
            return None
        axis = int(node.attr("axis", 1))
    return node.input(0), s.reshape(-1), z.reshape(-1), axis, [node.input(0), node.input(1), node.input(2)]


def _per_tensor(p) -> bool:
    return p is not None and p[3] is None and p[1].size == 1 and p[2].size == 1


def _weight(graph: Graph, p, out_axis: int, rank: int, symmetric_int8: bool):
    """The weight's int8 / uint8 array when ``p`` quantizes an initializer per tensor or along
    ``out_axis`` (its output channels) as the fused kernel can take it; else None."""
    if p is None:
        return None
    w = _const(graph, p[0])
    if w is None or w.ndim != rank or w.dtype not in (I8, U8) or p[2].dtype != w.dtype:
        return None
    if p[3] is not None and p[3] % rank != out_axis:
        return None
    if symmetric_int8 and (w.dtype != I8 or p[2].any()):
        return None
    return w


def _bias(graph: Graph, node: Node, tensor: str, xs: np.ndarray, ws: np.ndarray, n: int):
    """The int32 bias initializer's name when ``tensor`` is DequantizeLinear(int32 B) at scale
    float32(x_scale * w_scale); "" when there is no bias; None when the group must not fuse."""
    if not tensor:
        return ""
    p = _dq(graph, tensor, node, graph.opset)
    if p is None:
        return None
    b = _const(graph, p[0])
    if b is None or b.dtype != I32 or b.shape != (n,) or p[2].any():
        return None
    want = np.broadcast_to((xs.astype(np.float32) * ws.astype(np.float32)).astype(np.float32), (n,))
    if not np.array_equal(np.broadcast_to(p[1], (n,)), want):
        return None
    return p[0]


def _output_q(graph: Graph, node: Node, relu_ok: bool):
    """(QuantizeLinear node, parameters, nodes fused, activation) after ``node``'s output."""
    out = node.outputs[0]
    readers = graph.consumers(out)
    if out in graph.outputs or len(readers) != 1:
        return None
    nxt, act, fused = readers[0], None, [node]
    if nxt.op_type == "Relu" and not nxt.domain and relu_ok:
        fused.append(nxt)
        act, out = "relu", nxt.outputs[0]
        readers = graph.consumers(out)
        if out in graph.outputs or len(readers) != 1:
            return None
        nxt = readers[0]
    if nxt.op_type != "QuantizeLinear" or nxt.domain or nxt.attr("output_dtype") or int(nxt.attr("saturate", 1)) != 1:
        return None
    p = _qparams(graph, nxt, graph.opset)
    if not _per_tensor(p) or p[2].dtype not in (I8, U8):
        return None
    return nxt, p, fused + [nxt], act


def _match(graph: Graph, node: Node, rank: Dict[str, Optional[int]]):
    """(new node, new initializers, nodes it replaces) for one QDQ group, or None."""

    kind = node.op_type
    if node.domain or kind not in ("Conv", "MatMul", "Gemm"):
        return None
    if kind == "Gemm" and (int(node.attr("transA", 0)) or float(node.attr("alpha", 1.0)) != 1.0
                           or (node.input(2) and float(node.attr("beta", 1.0)) != 1.0)):
        return None
    px = _dq(graph, node.input(0), node, graph.opset)
    pw = _dq(graph, node.input(1), node, graph.opset)
    if not _per_tensor(px) or px[2].dtype not in (I8, U8) or pw is None:
        return None
    trans_b = bool(node.attr("transB", 0))
    if kind == "Conv":
        if rank.get(node.input(0)) != 4:
            return None
        w = _weight(graph, pw, 0, 4, symmetric_int8=True)
    elif kind == "MatMul":
        if (rank.get(node.input(0)) or 0) < 2:
            return None
        w = _weight(graph, pw, 1, 2, symmetric_int8=False)
    else:
        w = _weight(graph, pw, 0 if trans_b else 1, 2, symmetric_int8=True)
    if w is None:
        return None
    tail = _output_q(graph, node, relu_ok=kind != "MatMul")
    if tail is None:
        return None
    q, _, fused, act = tail
    n = w.shape[0] if kind == "Conv" or (kind == "Gemm" and trans_b) else w.shape[1]
    bias = _bias(graph, node, node.input(2), px[1], pw[1], n) if kind != "MatMul" else ""
    if bias is None:
        return None
    dqs = [graph.producer(node.input(i)) for i in range(2 if kind == "MatMul" else 3) if node.input(i)]
    old = dqs + fused
    ins = [px[0], px[4][1], px[4][2], pw[0], pw[4][1], pw[4][2], q.input(1), q.input(2)]
    inits = {}
    taken: set = set()
    for i in (2, 5, 7):
        if not ins[i]:   # an omitted zero point: uint8 0 (ONNX's default), made explicit
            ins[i] = fresh(graph, f"{node.name}_zero_point", taken)
            inits[ins[i]] = np.zeros((), U8)
    attrs = {k: v for k, v in node.attrs.items() if k not in ("transA", "transB", "alpha", "beta")}
    if kind == "Gemm" and not trans_b:
        ins[3] = fresh(graph, f"{pw[0]}_transposed", taken)
        inits[ins[3]] = np.ascontiguousarray(w.T)
    if kind == "MatMul":
        new = Node("QLinearMatMul", node.name, ins, [q.outputs[0]], {})
    elif kind == "Conv" and act is None:
        new = Node("QLinearConv", node.name, ins + ([bias] if bias else []), [q.outputs[0]], attrs)
    else:
        if act:
            attrs["activation"] = act
        op = "QLinearConv" if kind == "Conv" else "QLinearGemm"
        new = Node(op, node.name, ins + ([bias] if bias else []), [q.outputs[0]], attrs, DOMAIN)
    return new, inits, old


def fuse_qdq(graph: Graph) -> Graph:
    """DequantizeLinear -> Conv / MatMul / Gemm (-> Relu) -> QuantizeLinear as one int8 node."""
    try:
        rank = ranks(graph)
    except (NotImplementedError, ValueError):
        return graph   # the session reports it with the graph as written
    out = graph
    while True:
        for node in out.nodes:
            m = _match(out, node, rank)
            if m is not None:
                new, inits, old = m
                out = replace(out, old, new, inits)
                break
        else:
            return out

