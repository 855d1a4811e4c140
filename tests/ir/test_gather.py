"""ONNX Gather on tensors of the model (ir/ops_indexing.py): an embedding initializer indexed by ids
from a graph input, any axis, int32 / int64 ids, negative ids, ids out of range; on numpy and the
emulator against ONNX Runtime CPU and a reference written here with a loop over the ids."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from .helpers import TensorProto, check, helper, model, numpy_helper, ort_run, rand

import pygpu_ops as po

mk = helper.make_node


def ref_gather(data, ids, axis):
    """out[a..., i..., b...] = data[a..., wrap(ids[i...]), b...], one index at a time, in float64."""
    moved = np.moveaxis(np.asarray(data, np.float64), axis, 0)
    n = moved.shape[0]
    out = np.empty(ids.shape + moved.shape[1:])
    for pos in np.ndindex(*ids.shape):
        i = int(ids[pos])
        out[pos] = moved[i + n if i < 0 else i]
    k = ids.ndim
    return np.moveaxis(out, list(range(k)), list(range(axis, axis + k)))


def ids_model(data, ids, axis, *, ids_type=TensorProto.INT64, ids_dims=None, then=None):
    """Gather(data initializer, ids graph input) -> y (optionally followed by the nodes ``then``
    reading ``g`` and writing ``y``, with their initializers)."""
    extra_nodes, extra_inits = then or ([], {})
    out = "g" if then else "y"
    rank = data.ndim - 1 + ids.ndim
    g = helper.make_graph(
        [mk("Gather", ["table", "ids"], [out], axis=axis, name="gather")] + extra_nodes, "emb",
        [helper.make_tensor_value_info("ids", ids_type, ids_dims or list(ids.shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None] * rank)],
        [numpy_helper.from_array(v, k) for k, v in {"table": data, **extra_inits}.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = min(m.ir_version, 8)
    return m


def kernel_of(sess, backend):
    [node] = [n for n in sess.graph.nodes if n.op_type == "Gather"]
    assert node.kernel == ("gather:numpy" if backend == "numpy" else "gather:gather_rows")


@pytest.mark.parametrize("ids_dtype", [np.int64, np.int32])
def test_embedding_initializer_by_input_ids(host_backend, ids_dtype):
    table = rand(50, 16)
    ids = np.random.default_rng(0).integers(-50, 50, size=(3, 7)).astype(ids_dtype)
    ids[0, :2] = (-50, 49)
    m = ids_model(table, ids, 0, ids_type=TensorProto.INT64 if ids_dtype == np.int64 else TensorProto.INT32,
                  ids_dims=["B", "S"])
    sess, got = check(m, {"ids": ids}, host_backend, ref_gather(table, ids, 0), rtol=0, atol=0)
    kernel_of(sess, host_backend)
    # another batch and sequence length: the symbolic dims resolve again
    ids2 = np.array([[3, -1]], ids_dtype)
    np.testing.assert_array_equal(sess.run(None, {"ids": ids2})[0], table[[3, 49]][None])


@pytest.mark.parametrize("axis", [1, -1, 2])
def test_gather_initializer_on_other_axes(host_backend, axis):
    data = rand(4, 10, 6)
    n = data.shape[axis]
    ids = np.random.default_rng(axis + 3).integers(-n, n, size=(2, 5)).astype(np.int64)
    m = ids_model(data, ids, axis)
    sess, _ = check(m, {"ids": ids}, host_backend, ref_gather(data, ids, axis % 3), rtol=0, atol=0)
    kernel_of(sess, host_backend)


def test_embedding_then_matmul(host_backend):
    """ids -> Gather(table) -> MatMul(W): the gathered tensor feeds the next kernel on the device."""
    table, w = rand(30, 8), rand(8, 5, seed=2)
    ids = np.array([[0, 29, -30, 7], [-1, 3, 3, 12]], np.int64)
    m = ids_model(table, ids, 0, then=([mk("MatMul", ["g", "w"], ["y"])], {"w": w}))
    check(m, {"ids": ids}, host_backend, ref_gather(table, ids, 0) @ w.astype(np.float64))


def test_gather_on_runtime_float_tensor(host_backend):
    """Gather of a computed float tensor by constant indices (no host evaluation of model data)."""
    x = rand(3, 4, 5)
    idx = np.array([[4, -5], [0, 2]], np.int64)
    m = model([mk("Relu", ["x"], ["r"]), mk("Gather", ["r", "idx"], ["y"], axis=2)], {"x": x}, {"y": 4},
              {"idx": idx})
    sess, _ = check(m, {"x": x}, host_backend, ref_gather(np.maximum(x, 0), idx, 2), rtol=0, atol=0)
    kernel_of(sess, host_backend)


def test_constant_indices_out_of_range_refused_at_creation():
    m = model([mk("Gather", ["x", "idx"], ["y"], axis=1, name="g")], {"x": rand(3, 4)}, {"y": 2},
              {"idx": np.array([1, 4], np.int64)})
    with pytest.raises(ValueError, match=r"Gather node 'g' \(opset 13\): indices hold 4, out of range for axis 1 "
                                         r"of size 4"):
        po.InferenceSession(m, backend="numpy")


@pytest.mark.parametrize("bad", [50, -51, 2**40])
def test_ids_out_of_range_at_run(host_backend, bad):
    table = rand(50, 16)
    ids = np.array([[1, 2, 3], [4, 5, 6]], np.int64)
    m = ids_model(table, ids, 0)
    ids[1, 2] = bad
    sess = po.InferenceSession(m.SerializeToString(), backend=host_backend)
    with pytest.raises(ValueError, match=rf"^gather: indices holds {bad} at position \(1, 2\), out of range for "
                                         rf"axis 0 of size 50"):
        sess.run(None, {"ids": ids})
    if importlib.util.find_spec("onnxruntime") is not None:
        with pytest.raises(Exception):   # ONNX Runtime refuses it too (its own error type and message)
            ort_run(m, {"ids": ids})
