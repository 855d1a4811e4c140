"""ONNX -> operator IR, with the ``onnx`` package (``pip install pygpu_ops[onnx]``).

`load` accepts a path, the file's bytes or an ``onnx.ModelProto``; anything that does not parse
or fails ``onnx.checker`` is a ``ValueError``. `to_graph` converts the model's main graph into a
`pygpu_ops.ir.graph.Graph`: initializers become NumPy arrays (external data included, resolved
relative to the file), attributes become Python values (tensor attributes NumPy arrays), value
infos become `Tensor`s whose unnamed dimensions get fresh symbolic names. After this module, no
protobuf object is left in the IR.

Scope: the default ONNX domain (``""`` / ``"ai.onnx"``) at opsets `MIN_OPSET`..`MAX_OPSET` (the
range whose op semantics `pygpu_ops.ir.ops` implements; model-zoo CNNs are often opset 7-9). A
model at another opset, or a node of another domain (``com.microsoft``, ``ai.onnx.ml``...), is a
``NotImplementedError`` naming it; subgraph attributes (If / Loop bodies) are refused the same
way. Whether each op and attribute value is supported is decided by the op table, when the
session is created.
"""
from __future__ import annotations

import os
from typing import Any, Dict, List

import numpy as np

from .graph import Graph, Node, Tensor, unknown_dim

MIN_OPSET = 7
MAX_OPSET = 21
_DEFAULT_DOMAINS = ("", "ai.onnx")


def _onnx():
    try:
        import onnx
    except ImportError:   # pragma: no cover - the test extra installs it
        raise ImportError("reading ONNX models needs the onnx package: pip install 'pygpu_ops[onnx]'") from None
    return onnx


def load(model):
    """An ``onnx.ModelProto`` from a path, bytes or a ModelProto; ``ValueError`` if it is not a valid model."""
    onnx = _onnx()
    from google.protobuf.message import DecodeError

    base_dir = None
    if isinstance(model, onnx.ModelProto):
        proto = model
    elif isinstance(model, (bytes, bytearray, memoryview)):
        proto = onnx.ModelProto()
        try:
            proto.ParseFromString(bytes(model))
        except DecodeError as e:
            raise ValueError(f"model: the bytes are not an ONNX model ({e})") from None
    elif isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not os.path.isfile(path):
            raise ValueError(f"model: no such file {path!r}")
        try:
            proto = onnx.load(path, load_external_data=False)
        except (DecodeError, RuntimeError, ValueError) as e:
            raise ValueError(f"model: {path!r} is not an ONNX model ({e})") from None
        base_dir = os.path.dirname(os.path.abspath(path))
    else:
        raise TypeError(f"model must be a path, bytes or an onnx.ModelProto; got {type(model).__name__}")
    if not proto.HasField("graph"):
        raise ValueError("model: not an ONNX model (no graph); an empty or foreign file parses as an empty ModelProto")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ValueError(f"model: not a valid ONNX model: {str(e).strip().splitlines()[0]}") from None
    if base_dir is not None:
        from onnx.external_data_helper import load_external_data_for_model, uses_external_data

        if any(uses_external_data(t) for t in proto.graph.initializer):
            load_external_data_for_model(proto, base_dir)
    return proto


def default_opset(proto) -> int:
    """The model's opset of the default domain; ``NotImplementedError`` outside MIN..MAX_OPSET."""
    versions = [o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions:
        raise ValueError("model: opset_import has no entry for the default ONNX domain")
    opset = int(versions[0])
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise NotImplementedError(f"model: opset {opset} of the default domain is not supported; "
                                  f"opsets {MIN_OPSET}..{MAX_OPSET} are")
    return opset


def _attr_value(onnx, node_name: str, op_type: str, a) -> Any:
    from onnx import numpy_helper

    if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
        raise NotImplementedError(f"node {node_name!r} ({op_type}): subgraph attribute {a.name!r} "
                                  f"(control flow) is not supported")
    if a.type == onnx.AttributeProto.TENSOR:
        return numpy_helper.to_array(a.t)
    if a.type == onnx.AttributeProto.TENSORS:
        return [numpy_helper.to_array(t) for t in a.tensors]
    if a.type == onnx.AttributeProto.SPARSE_TENSOR:
        # Kept as a marker: Constant refuses it with its own message.
        return ("sparse_tensor",)
    v = onnx.helper.get_attribute_value(a)
    if isinstance(v, bytes):
        return v.decode("utf-8", "replace")
    if isinstance(v, list):
        return [x.decode("utf-8", "replace") if isinstance(x, bytes) else x for x in v]
    return v


def _np_dtype(onnx, elem_type: int, what: str) -> np.dtype:
    try:
        return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem_type))
    except (KeyError, TypeError, ValueError):
        raise NotImplementedError(f"{what}: element type {elem_type} is not supported") from None


def _tensor_from_value_info(onnx, vi) -> Tensor:
    t = vi.type
    if t.WhichOneof("value") != "tensor_type":
        raise NotImplementedError(f"value {vi.name!r}: only tensor values are supported, not {t.WhichOneof('value')}")
    tt = t.tensor_type
    dtype = _np_dtype(onnx, tt.elem_type, f"value {vi.name!r}")
    shape = None
    if tt.HasField("shape"):
        dims: List[Any] = []
        for i, d in enumerate(tt.shape.dim):
            if d.HasField("dim_value"):
                dims.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param:
                dims.append(d.dim_param)
            else:
                dims.append(unknown_dim(f"{vi.name}_{i}_"))
        shape = tuple(dims)
    return Tensor(vi.name, dtype, shape)


def to_graph(proto) -> Graph:
    """The IR of ``proto``'s main graph (shapes of intermediates are filled in by the session)."""
    onnx = _onnx()
    from onnx import numpy_helper

    opset = default_opset(proto)
    g = proto.graph
    initializers: Dict[str, np.ndarray] = {}
    for t in g.initializer:
        initializers[t.name] = numpy_helper.to_array(t)
    if g.sparse_initializer:
        raise NotImplementedError("model: sparse initializers are not supported")
    tensors: Dict[str, Tensor] = {}
    for name, arr in initializers.items():
        tensors[name] = Tensor(name, arr.dtype, arr.shape)
    inputs = []
    for vi in g.input:
        if vi.name in initializers:
            continue   # IR < 4 lists initializers among the inputs; they are constants here
        tensors[vi.name] = _tensor_from_value_info(onnx, vi)
        inputs.append(vi.name)
    for vi in list(g.value_info) + list(g.output):
        if vi.name not in tensors and vi.type.WhichOneof("value") == "tensor_type":
            tensors[vi.name] = _tensor_from_value_info(onnx, vi)
    nodes = []
    for k, n in enumerate(g.node):
        name = n.name or f"{n.op_type}_{k}"
        if n.domain not in _DEFAULT_DOMAINS:
            raise NotImplementedError(f"node {name!r} ({n.op_type}): domain {n.domain!r} is not supported; "
                                      f"only the default ONNX domain (opset {opset}) is")
        attrs = {a.name: _attr_value(onnx, name, n.op_type, a) for a in n.attribute}
        nodes.append(Node(n.op_type, name, list(n.input), list(n.output), attrs))
    return Graph(nodes, tensors, initializers, inputs, [o.name for o in g.output], opset, name=g.name or "graph")
