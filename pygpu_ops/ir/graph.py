"""The operator IR: tensors, nodes and the graph, free of any file format's types.

A model is a data-flow graph of operators. This module holds it in plain Python: a `Tensor` is a
name, a NumPy dtype, a shape whose entries are ints or strings (symbolic dimensions such as
``"N"``) and a layout; a `Node` is an op type, a name, the names of its input and output tensors,
its attributes as Python values (ints, floats, strings, lists of them, NumPy arrays for tensor
attributes) and ``kernel``, the pygpu_ops op and variant it runs; a `Graph` holds the nodes in
execution (topological) order, the tensors, the initializers (constant NumPy arrays), the graph
inputs and outputs and the opset the node semantics follow.

An empty string among a node's inputs is an omitted optional input, as in ONNX. The graph is
built by an importer (`pygpu_ops.ir.onnx_import`) and read by the session; nothing here runs a
kernel. ``str(graph)`` is a table: one row per node with its op, input and output shapes and kernel.

Symbolic dimensions: a string dimension is a product of named factors and an optional integer,
written ``"N"``, ``"N*16"``; `dim_mul` / `dim_div` keep such products exact where they can (a
dimension they cannot express becomes a fresh ``"?"``-prefixed name, which never compares equal to
another dimension). The session resolves every dimension to an int per input signature.
"""
from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass, field
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

Dim = Union[int, str]
Shape = Tuple[Dim, ...]

_fresh = itertools.count()


# ---------------------------------------------------------------------------------------------
# Symbolic dimensions
# ---------------------------------------------------------------------------------------------
def _factors(d: Dim) -> Tuple[int, Tuple[str, ...]]:
    """(integer coefficient, sorted symbol names) of a dimension."""
    if isinstance(d, (int, np.integer)):
        return int(d), ()
    coef, syms = 1, []
    for part in str(d).split("*"):
        if part.lstrip("-").isdigit():
            coef *= int(part)
        else:
            syms.append(part)
    return coef, tuple(sorted(syms))


def _make(coef: int, syms: Sequence[str]) -> Dim:
    if not syms:
        return coef
    if coef == 0:
        return 0
    return "*".join(([str(coef)] if coef != 1 else []) + sorted(syms))


def unknown_dim(hint: str = "") -> str:
    """A fresh dimension name that stands for a value only known once the inputs are."""
    return f"?{hint}{next(_fresh)}"


def dim_mul(a: Dim, b: Dim) -> Dim:
    """a * b, symbolic where either is."""
    (ca, sa), (cb, sb) = _factors(a), _factors(b)
    if any(s.startswith("?") for s in sa + sb):
        return unknown_dim()
    return _make(ca * cb, sa + sb)


def dim_prod(dims: Iterable[Dim]) -> Dim:
    out: Dim = 1
    for d in dims:
        out = dim_mul(out, d)
    return out


def dim_div(a: Dim, b: Dim) -> Dim:
    """a / b where it is exact (b's symbols among a's, coefficients dividing); else a fresh unknown."""
    (ca, sa), (cb, sb) = _factors(a), _factors(b)
    rest = list(sa)
    for s in sb:
        if s not in rest or s.startswith("?"):
            return unknown_dim()
        rest.remove(s)
    if cb == 0 or ca % cb:
        return unknown_dim()
    return _make(ca // cb, rest)


def is_static(shape: Optional[Shape]) -> bool:
    return shape is not None and all(isinstance(d, (int, np.integer)) for d in shape)


def format_shape(shape: Optional[Shape]) -> str:
    if shape is None:
        return "?"
    return "(" + ", ".join(str(d) for d in shape) + ("," if len(shape) == 1 else "") + ")"


# ---------------------------------------------------------------------------------------------
# Tensors, nodes, graph
# ---------------------------------------------------------------------------------------------
@dataclass
class Tensor:
    """One value of the graph. ``shape`` is None where even the rank is unknown; ``layout`` is
    ``"NCHW"`` / ``"NHWC"`` for image tensors the convolutions and pools read, ``""`` otherwise
    (plain C-contiguous)."""

    name: str
    dtype: np.dtype
    shape: Optional[Shape]
    layout: str = ""

    def __post_init__(self):
        self.dtype = np.dtype(self.dtype)
        if self.shape is not None:
            self.shape = tuple(int(d) if isinstance(d, (int, np.integer)) else str(d) for d in self.shape)


@dataclass
class Node:
    """One operator call. ``attrs`` holds Python values only; ``kernel`` names what runs it."""

    op_type: str
    name: str
    inputs: List[str]
    outputs: List[str]
    attrs: Dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    kernel: str = ""

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def input(self, i: int) -> str:
        """The name of input ``i``, or "" when it is omitted (past the end or empty)."""
        return self.inputs[i] if i < len(self.inputs) else ""


class Graph:
    """Nodes in execution order with their tensors, initializers, inputs and outputs.

    ``inputs`` are the names the caller feeds (initializers excluded), ``outputs`` the names
    returned. The constructor orders ``nodes`` topologically (stable: a valid order is kept) and
    raises ``ValueError`` on a cycle, a tensor produced twice or an input nobody produces.
    """

    def __init__(self, nodes: Sequence[Node], tensors: Dict[str, Tensor], initializers: Dict[str, np.ndarray],
                 inputs: Sequence[str], outputs: Sequence[str], opset: int, name: str = "graph"):
        self.name = name
        self.opset = int(opset)
        self.tensors = dict(tensors)
        self.initializers = dict(initializers)
        self.inputs = list(inputs)
        self.outputs = list(outputs)
        self.nodes = _toposort(list(nodes), set(self.inputs) | set(self.initializers))
        self._producer = {o: n for n in self.nodes for o in n.outputs if o}
        self._consumers: Dict[str, List[Node]] = {}
        for n in self.nodes:
            for i in n.inputs:
                if i:
                    self._consumers.setdefault(i, []).append(n)
        for o in self.outputs:
            if o not in self._producer and o not in self.inputs and o not in self.initializers:
                raise ValueError(f"graph output {o!r} is produced by no node and is not an input")

    def producer(self, name: str) -> Optional[Node]:
        """The node that writes tensor ``name`` (None for inputs and initializers)."""
        return self._producer.get(name)

    def consumers(self, name: str) -> List[Node]:
        """The nodes that read tensor ``name``, in execution order."""
        return list(self._consumers.get(name, ()))

    def table(self) -> str:
        """One row per node: op, node name, input shapes -> output shapes, kernel."""
        def shapes(names):
            return ", ".join(format_shape(self.tensors[n].shape) if n in self.tensors else "?"
                             for n in names if n)

        rows = [("op", "node", "inputs -> outputs", "kernel")]
        for n in self.nodes:
            rows.append((n.op_type, n.name, f"{shapes(n.inputs)} -> {shapes(n.outputs)}", n.kernel))
        widths = [max(len(r[c]) for r in rows) for c in range(3)]
        lines = ["  ".join(r[c].ljust(widths[c]) for c in range(3)) + "  " + r[3] for r in rows]
        lines.insert(1, "-" * max(len(line) for line in lines))
        ins = ", ".join(f"{i} {format_shape(self.tensors[i].shape)} {self.tensors[i].dtype}" for i in self.inputs)
        outs = ", ".join(f"{o} {format_shape(self.tensors[o].shape)}" for o in self.outputs)
        return f"graph {self.name} (opset {self.opset}): inputs {ins}; outputs {outs}\n" + "\n".join(lines)

    __str__ = table

    def __repr__(self) -> str:
        return f"<Graph {self.name!r}: {len(self.nodes)} nodes, opset {self.opset}>"


def _toposort(nodes: List[Node], available: set) -> List[Node]:
    """Kahn's algorithm, taking nodes in their given order whenever they are ready, so a file that
    is already in order keeps it."""
    producers: Dict[str, int] = {}
    for i, n in enumerate(nodes):
        for o in n.outputs:
            if not o:
                continue
            if o in producers or o in available:
                raise ValueError(f"tensor {o!r} is written by more than one node or is also an input "
                                 f"(node {n.name!r})")
            producers[o] = i
    missing = {i: [x for x in n.inputs if x and x not in producers and x not in available]
               for i, n in enumerate(nodes)}
    for i, names in missing.items():
        if names:
            raise ValueError(f"node {nodes[i].name!r} ({nodes[i].op_type}) reads {names[0]!r}, which no node "
                             f"produces and which is neither a graph input nor an initializer")
    waiting = [sum(1 for x in set(n.inputs) if x in producers) for n in nodes]
    readers: Dict[int, List[int]] = {}
    for i, n in enumerate(nodes):
        for x in set(n.inputs):
            if x in producers:
                readers.setdefault(producers[x], []).append(i)
    order: List[Node] = []
    ready = sorted(i for i, w in enumerate(waiting) if w == 0)
    heapq.heapify(ready)
    while ready:
        i = heapq.heappop(ready)
        order.append(nodes[i])
        for j in readers.get(i, ()):
            waiting[j] -= 1
            if waiting[j] == 0:
                heapq.heappush(ready, j)
    if len(order) != len(nodes):
        stuck = next(n for n, w in zip(nodes, waiting) if w)
        raise ValueError(f"the graph has a cycle through node {stuck.name!r} ({stuck.op_type})")
    return order
