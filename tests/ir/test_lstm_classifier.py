"""examples/lstm_classifier.onnx (Embedding -> LSTM -> Gemm, exported by PyTorch's TorchScript
exporter): the committed file runs through InferenceSession, matches ONNX Runtime and reaches the
accuracy the example recorded. PyTorch is not needed: the test set comes from the example's NumPy
generator. Also the pieces the exported graph needed: ConstantOfShape (the zero initial states) and
a 0-d constant index (``h_n[0]``) passed to a device step."""
from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

from .helpers import check, helper, model, ort_run

import pygpu_ops as po

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
MODEL = EXAMPLES / "lstm_classifier.onnx"


@pytest.fixture
def ex(monkeypatch):
    """The example module (examples/ is not a package: on the path for this test only)."""
    monkeypatch.syspath_prepend(str(EXAMPLES))
    return importlib.import_module("lstm_classifier_onnx")


def test_generator_labels_the_unique_most_frequent_topic(ex):
    ids, labels = ex.make_batch(np.random.default_rng(5), 300, 17)
    assert ids.shape == (300, 17) and ids.dtype == np.int64 and labels.shape == (300,)
    assert ids.min() >= 0 and ids.max() < ex.VOCAB
    keyword = ids >= ex.KEYWORD_BASE
    topic = (ids - ex.KEYWORD_BASE) // ex.KEYWORDS_PER_CLASS
    counts = np.stack([(keyword & (topic == k)).sum(axis=1) for k in range(ex.CLASSES)], axis=1)
    top = np.sort(counts, axis=1)
    assert (top[:, -1] > top[:, -2]).all(), "the winning topic must be unique"
    assert (counts.argmax(axis=1) == labels).all()
    assert set(labels.tolist()) == set(range(ex.CLASSES))
    # deterministic: the test set is the same arrays every time
    a, b = ex.test_set(), ex.test_set()
    assert [x.shape for x, _ in a] == [(ex.TEST_PER_LENGTH, s) for s in ex.TEST_LENGTHS]
    assert all((x == y).all() and (lx == ly).all() for (x, lx), (y, ly) in zip(a, b))
    with pytest.raises(ValueError, match="length"):
        ex.make_batch(np.random.default_rng(0), 2, 2)


def test_committed_file_is_small_and_uses_gather_lstm_gemm(ex):
    onnx = pytest.importorskip("onnx")
    assert MODEL.stat().st_size < 1 << 20
    m = onnx.load(str(MODEL))
    ops = [n.op_type for n in m.graph.node]
    assert {"Gather", "LSTM", "Gemm"} <= set(ops) and ops.count("LSTM") == 1
    assert {p.key: p.value for p in m.metadata_props}["test_accuracy"] == repr(ex.TEST_ACCURACY)
    sess = po.InferenceSession(str(MODEL), backend="numpy")
    kernels = {n.op_type: [] for n in sess.graph.nodes}
    for n in sess.graph.nodes:
        kernels[n.op_type].append(n.kernel)
    # the embedding and h_n[0] are device Gathers, the shape subgraph's Gather runs on the host
    assert sorted(kernels["Gather"]) == ["gather:numpy", "gather:numpy", "host:gather"]
    assert kernels["LSTM"] == ["lstm:numpy"] and kernels["Gemm"] == ["gemm:numpy"]
    assert kernels["ConstantOfShape"] == ["host:constant_of_shape"]
    assert [i.name for i in sess.get_inputs()] == ["ids"] and sess.get_inputs()[0].shape == ["N", "S"]


def test_accuracy_on_numpy_is_the_recorded_one(ex):
    pytest.importorskip("onnxruntime")
    res = ex.evaluate("numpy", verbose=False)
    assert res["n_test"] == len(ex.TEST_LENGTHS) * ex.TEST_PER_LENGTH
    assert res["accuracy"] == ex.TEST_ACCURACY == ex.recorded_accuracy()
    assert res["ort_accuracy"] == res["accuracy"]
    assert res["max_abs_diff"] <= 1e-4 * max(1.0, res["max_abs_logit"])


def _ort_file(ids):
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(MODEL), providers=["CPUExecutionProvider"]).run(None, {"ids": ids})[0]


def test_matches_ort_on_a_few_sentences(ex, host_backend):
    """A few short sentences of two lengths (one plan each), so the emulator runs in seconds."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(11)
    sess = po.InferenceSession(str(MODEL), backend=host_backend)
    for n, s in ((3, 5), (2, 9)):
        ids, labels = ex.make_batch(rng, n, s)
        got = np.asarray(sess.run(None, {"ids": ids})[0])
        want = _ort_file(ids)
        assert got.shape == want.shape == (n, ex.CLASSES) and got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(want).max())))


# ---------------------------------------------------------------------------------------------
# ConstantOfShape and a 0-d constant index
# ---------------------------------------------------------------------------------------------
def _const_of_shape_model(value=None):
    """x (N, C) float32 -> y = x + ConstantOfShape(Shape(x)) and z = ConstantOfShape([2, N])."""
    kw = {} if value is None else {"value": helper.make_tensor("v", value[0], [1], [value[1]])}
    nodes = [helper.make_node("Shape", ["x"], ["s"]),
             helper.make_node("ConstantOfShape", ["s"], ["f"], **kw),
             helper.make_node("Gather", ["s", "zero"], ["n"], axis=0),
             helper.make_node("Unsqueeze", ["n", "ax"], ["n1"]),
             helper.make_node("Concat", ["two", "n1"], ["s2"], axis=0),
             helper.make_node("ConstantOfShape", ["s2"], ["z"], **kw)]
    return nodes


def test_constant_of_shape_default_zeros_and_float_value(host_backend):
    from onnx import TensorProto

    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64), "two": np.array([2], np.int64)}
    for value, expect in ((None, 0.0), ((TensorProto.FLOAT, 1.5), 1.5)):
        nodes = _const_of_shape_model(value) + [helper.make_node("Add", ["x", "f"], ["y"])]
        m = model(nodes, {"x": x}, {"y": 2, "z": 2}, inits, input_shapes={"x": ["N", 4]})
        check(m, {"x": x}, host_backend)
        y, z = po.InferenceSession(m.SerializeToString(), backend=host_backend).run(None, {"x": x})
        np.testing.assert_array_equal(np.asarray(z), np.full((2, 3), expect, np.float32))
        np.testing.assert_array_equal(np.asarray(y), x + np.float32(expect))


def test_constant_of_shape_int_value_and_empty_shape():
    from onnx import TensorProto

    x = np.zeros((5, 2), np.float32)
    inits = {"zero": np.array(0, np.int64), "ax": np.array([0], np.int64), "two": np.array([0], np.int64)}
    m = model(_const_of_shape_model((TensorProto.INT64, 7)), {"x": x}, {"f": (2, np.int64), "z": (2, np.int64)},
              inits, input_shapes={"x": ["N", 2]})
    f, z = po.InferenceSession(m.SerializeToString(), backend="numpy").run(None, {"x": x})
    want_f, want_z = ort_run(m, {"x": x})
    assert f.dtype == np.int64 and (f == 7).all() and f.shape == want_f.shape == (5, 2)
    assert z.shape == want_z.shape == (0, 5) and z.dtype == want_z.dtype


def test_constant_of_shape_refuses_a_runtime_shape_and_a_long_value():
    from onnx import TensorProto

    s = np.array([2, 3], np.int64)
    m = model([helper.make_node("ConstantOfShape", ["s"], ["y"])], {"s": s}, {"y": 2})
    with pytest.raises(NotImplementedError, match="ConstantOfShape.*shape must be a constant"):
        po.InferenceSession(m.SerializeToString(), backend="numpy")
    bad = helper.make_tensor("v", TensorProto.FLOAT, [2], [1.0, 2.0])
    m = model([helper.make_node("ConstantOfShape", ["s"], ["y"], value=bad)], {}, {"y": 2}, {"s": s})
    with pytest.raises(ValueError, match="value must hold one element"):
        po.InferenceSession(m.SerializeToString(), backend="numpy")


def test_scalar_constant_index_stays_0d(host_backend):
    """Gather(x, 0) on a model tensor drops the axis: the constant index reaches the step as 0-d."""
    x = np.random.default_rng(1).standard_normal((2, 3, 4)).astype(np.float32)
    m = model([helper.make_node("Gather", ["x", "i"], ["y"], axis=1)], {"x": x}, {"y": 2},
              {"i": np.array(-1, np.int64)})
    check(m, {"x": x}, host_backend)
    y = po.InferenceSession(m.SerializeToString(), backend=host_backend).run(None, {"x": x})[0]
    np.testing.assert_array_equal(np.asarray(y), x[:, -1])
