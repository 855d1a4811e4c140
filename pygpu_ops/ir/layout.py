"""The NHWC layout pass: run the CNN part of a graph channels-last, with transposes only at its edges.

ONNX models are NCHW. ``to_nhwc(graph)`` returns a new graph in which the image ops run on the
package's NHWC kernels (``conv2d(layout="NHWC")``, the ``*_nhwc`` pools, ``batch_norm`` on the last
axis) and the layout changes only where a tensor enters or leaves that region. The session runs it
when created with ``layout="NHWC"``, after the other passes (so BatchNormalization is already folded
and Conv + Relu fused).

How it works. Every tensor name keeps its NCHW meaning; a tensor computed channels-last gets a
second name, ``<name>__nhwc``, and the nodes that can read it are rewired to that name. One walk
over the nodes in order decides each node's placement:

* Conv / FusedConv (2-D, weights an initializer): always NHWC. Its weights are transposed once,
  here, to (O, kh, kw, C/group) as a new initializer (a weight shared with another node is left as
  it was); an NCHW input is transposed in front (a graph input entering the CNN).
* MaxPool, AveragePool, GlobalAveragePool, BatchNormalization, Relu, LeakyRelu, Clip, Sigmoid,
  Tanh, Identity: NHWC when their (first) input exists channels-last; they follow the data, so a
  pool straight after a graph input stays NCHW and costs no transpose.
* Add / Sub / Mul / Div: NHWC when an operand exists channels-last and every operand is a 4-D
  tensor or an initializer of rank <= 4. An initializer is broadcast to 4-D and permuted once to
  NHWC (a per-channel (C, 1, 1) bias becomes (1, 1, 1, C)); a 4-D operand that exists only NCHW is
  transposed in.
* Concat of 4-D tensors, one of them channels-last and none an initializer: NHWC, with ``axis``
  remapped (1, the channels, becomes 3).
* Anything else (Flatten, Reshape, Gemm, MatMul, Softmax, Transpose, Shape, ...) needs NCHW
  semantics: an NHWC input is transposed back (``Transpose(perm=[0, 3, 1, 2])`` writing the
  original name) in front of it. So are graph outputs.

Each transpose is made once per tensor and direction and reused by every reader. Placed nodes get
``attrs["layout"] = "NHWC"`` (the handlers of `pygpu_ops.ir.ops` read it: the image ops switch
kernels; the elementwise ones are layout-agnostic and just record it) and their output tensors
``layout = "NHWC"``; the inserted transposes to NHWC carry it too.

A node the pass cannot place stays NCHW with a transpose in front: never a wrong result, at worst
a transpose more. Limits: 2-D convolutions only (Conv on 3-D inputs stays NCHW); Conv weights
must be initializers; the pass does not move transposes across Reshape / Flatten (a Flatten after
a GlobalAveragePool transposes an (N, 1, 1, C) tensor, which is cheap but not free).
"""
from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .graph import Graph, Node, Tensor
from .rewrite import ranks

TO_NHWC = [0, 2, 3, 1]
TO_NCHW = [0, 3, 1, 2]
#: NCHW axis -> the axis it is in NHWC.
AXIS_IN_NHWC = [0, 3, 1, 2]

#: Image ops with an NHWC kernel that follow their input's layout.
FOLLOW = {"MaxPool", "AveragePool", "GlobalAveragePool", "BatchNormalization"}
#: Elementwise ops on their first input; the other inputs (Clip's min / max) are scalars.
AGNOSTIC = {"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Identity"}
BINARY = {"Add", "Sub", "Mul", "Div", "FusedAdd"}   # FusedAdd: Add + Relu / Clip(0, 6), elementwise too
CONVS = {"Conv", "FusedConv"}


def _permuted(shape, perm):
    return None if shape is None else tuple(shape[p] for p in perm)


class _Rewriter:
    def __init__(self, graph: Graph):
        self.g = graph
        self.ranks = ranks(graph)
        self.nodes: List[Node] = []
        self.inits: Dict[str, np.ndarray] = dict(graph.initializers)
        self.tensors: Dict[str, Tensor] = dict(graph.tensors)
        self.nhwc: Dict[str, str] = {}                 # NCHW name -> its channels-last name
        # Names whose NCHW value exists in the new graph: inputs, initializers, NCHW nodes' outputs.
        self.nchw = set(graph.inputs) | set(graph.initializers)
        self.taken = set(graph.tensors) | set(graph.initializers) | {o for n in graph.nodes for o in n.outputs}

    def _fresh(self, base: str) -> str:
        name, k = base, 1
        while name in self.taken:
            k += 1
            name = f"{base}_{k}"
        self.taken.add(name)
        return name

    def _tensor(self, name: str, like: str, perm, layout: str) -> None:
        old = self.tensors.get(like)
        if old is not None:
            self.tensors[name] = Tensor(name, old.dtype, _permuted(old.shape, perm), layout)

    def rank(self, name: str) -> Optional[int]:
        return self.ranks.get(name)

    def as_nhwc(self, name: str) -> str:
        """The channels-last name of 4-D tensor ``name``, transposing it in once if needed."""
        if name not in self.nhwc:
            out = self._fresh(f"{name}__nhwc")
            self.nodes.append(Node("Transpose", self._fresh(f"{name}__to_nhwc"), [name], [out],
                                   {"perm": list(TO_NHWC), "layout": "NHWC"}))
            self._tensor(out, name, TO_NHWC, "NHWC")
            self.nhwc[name] = out
        return self.nhwc[name]

    def as_nchw(self, name: str) -> str:
        """``name`` itself, transposed back from channels-last first where only that exists."""
        if name and name not in self.nchw:
            self.nodes.append(Node("Transpose", self._fresh(f"{name}__to_nchw"), [self.nhwc[name]], [name],
                                   {"perm": list(TO_NCHW)}))
            self.nchw.add(name)
        return name

    def emit_nchw(self, node: Node) -> None:
        inputs = [self.as_nchw(i) for i in node.inputs]
        self.nodes.append(Node(node.op_type, node.name, inputs, list(node.outputs), dict(node.attrs),
                               node.domain, node.kernel))
        self.nchw.update(o for o in node.outputs if o)

    def emit_nhwc(self, node: Node, inputs: List[str], attrs=None) -> None:
        outs = []
        for o in node.outputs:
            if not o:
                outs.append(o)
                continue
            new = self._fresh(f"{o}__nhwc")
            self._tensor(new, o, TO_NHWC, "NHWC")
            self.nhwc[o] = new
            outs.append(new)
        a = dict(node.attrs if attrs is None else attrs)
        a["layout"] = "NHWC"
        self.nodes.append(Node(node.op_type, node.name, inputs, outs, a, node.domain, node.kernel))

    # -- placement rules ----------------------------------------------------------------------
    def conv(self, node: Node) -> bool:
        x, w = node.input(0), node.input(1)
        if self.rank(x) != 4 or w not in self.inits or self.inits[w].ndim != 4:
            return False
        wt = self._fresh(f"{w}__ohwi")
        self.inits[wt] = np.ascontiguousarray(self.inits[w].transpose(0, 2, 3, 1))
        self.tensors[wt] = Tensor(wt, self.inits[wt].dtype, self.inits[wt].shape)
        self.emit_nhwc(node, [self.as_nhwc(x), wt] + list(node.inputs[2:]))
        return True

    def follow(self, node: Node) -> bool:
        x = node.input(0)
        if x not in self.nhwc or self.rank(x) != 4:
            return False
        self.emit_nhwc(node, [self.nhwc[x]] + list(node.inputs[1:]))
        return True

    def binary(self, node: Node) -> bool:
        if not any(i in self.nhwc for i in node.inputs):
            return False
        inputs = []
        for i in node.inputs:
            if i in self.inits:
                v = self.inits[i]
                if v.ndim > 4:
                    return False
                inputs.append(i)            # placeholder; permuted below once the node is placed
            elif self.rank(i) != 4:
                return False
            else:
                inputs.append(None)
        for k, i in enumerate(node.inputs):
            if inputs[k] is None:
                inputs[k] = self.as_nhwc(i)
            elif self.inits[i].size > 1:
                v = self.inits[i].reshape((1,) * (4 - self.inits[i].ndim) + self.inits[i].shape)
                name = self._fresh(f"{i}__nhwc")
                self.inits[name] = np.ascontiguousarray(v.transpose(TO_NHWC))
                self.tensors[name] = Tensor(name, v.dtype, self.inits[name].shape)
                inputs[k] = name
        self.emit_nhwc(node, inputs)
        return True

    def concat(self, node: Node) -> bool:
        parts = [i for i in node.inputs if i]
        if not any(i in self.nhwc for i in parts) or any(i in self.inits or self.rank(i) != 4 for i in parts):
            return False
        axis = int(node.attr("axis")) % 4
        attrs = dict(node.attrs, axis=AXIS_IN_NHWC[axis])
        self.emit_nhwc(node, [self.as_nhwc(i) if i else i for i in node.inputs], attrs)
        return True

    def run(self) -> Graph:
        for node in self.g.nodes:
            op = node.op_type
            placed = ((op in CONVS and self.conv(node))
                      or ((op in FOLLOW or op in AGNOSTIC) and self.follow(node))
                      or (op in BINARY and self.binary(node))
                      or (op == "Concat" and self.concat(node)))
            if not placed:
                self.emit_nchw(node)
        for o in self.g.outputs:
            self.as_nchw(o)
        read = {i for n in self.nodes for i in n.inputs if i}
        inits = {k: v for k, v in self.inits.items() if k in read or k in self.g.outputs}
        used = read | {o for n in self.nodes for o in n.outputs if o} | set(self.g.inputs) | set(self.g.outputs)
        tensors = {k: t for k, t in self.tensors.items() if k in used}
        return Graph(self.nodes, tensors, inits, self.g.inputs, self.g.outputs, self.g.opset, self.g.name)


def to_nhwc(graph: Graph) -> Graph:
    """A new graph whose CNN part runs channels-last (see the module docstring); ``graph`` is not
    changed. A graph with no 2-D convolution on a weight initializer comes back as is
    (``result is graph``), as the other passes do when they do not apply."""
    if not any(n.op_type in CONVS for n in graph.nodes):
        return graph
    new = _Rewriter(graph).run()
    if not any(n.attr("layout") == "NHWC" for n in new.nodes):
        return graph
    return new


def transposes(graph: Graph) -> int:
    """The number of Transpose nodes (the layout pass's edges, plus any the model had)."""
    return sum(1 for n in graph.nodes if n.op_type == "Transpose")
