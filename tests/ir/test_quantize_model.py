"""``pygpu_ops.quantize_model``: the QDQ models it writes, checked against ONNX Runtime and against
scales computed here from the calibration data.

Agreement with ONNX Runtime is bit-exact: every quantized node of these models fuses into one int8
node on both sides (ours: `fuse_qdq`; ONNX Runtime: its QDQ transformers, which drop a Relu before a
QuantizeLinear whose zero point is the type's minimum, as the calibrated Relu outputs here have),
both sum exactly in int32 and requantize in float32 the same way, and the float ops between them
(MaxPool, Flatten, Add) read the same dequantized values. The digits CNN ends in a Softmax, whose
float32 exponentials differ by rounding between the two libraries: there the probabilities agree to
float32 rounding (1e-6) and the predictions exactly.
"""
from __future__ import annotations

from functools import lru_cache

import numpy as np
import pytest

from .helpers import helper, numpy_helper, onnx, ort_run
from .test_models import model_backend  # noqa: F401  (fixture)
from .test_quant_models import float_cnn, float_mlp

import pygpu_ops as po

TP = onnx.TensorProto
mk = helper.make_node


def residual_model():
    """x -> Conv(3->3, pad 1) -> Relu -> Add(x): the input read by a quantized Conv and a float Add."""
    r = np.random.default_rng(4)
    inits = [numpy_helper.from_array((r.standard_normal((3, 3, 3, 3)) * 0.3).astype(np.float32), "W"),
             numpy_helper.from_array((r.standard_normal(3) * 0.1).astype(np.float32), "B")]
    nodes = [mk("Conv", ["x", "W", "B"], ["c"], pads=[1, 1, 1, 1], name="conv"), mk("Relu", ["c"], ["r"], name="relu"),
             mk("Add", ["r", "x"], ["y"], name="residual")]
    g = helper.make_graph(nodes, "res", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 3, 5, 5])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, ["N", 3, 5, 5])], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    return m


MODELS = {"cnn": (lambda: float_cnn(), (4, 3, 8, 8)), "cnn_gemm": (lambda: float_cnn(gemm=True), (4, 3, 8, 8)),
          "cnn_gemm_relu": (lambda: float_cnn(gemm=True, relu_last=True), (4, 3, 8, 8)),
          "mlp": (float_mlp, (6, 20)), "residual": (residual_model, (2, 3, 5, 5))}
N_QUANTIZED = {"cnn": 3, "cnn_gemm": 3, "cnn_gemm_relu": 3, "mlp": 2, "residual": 1}


def _feeds(shape, seed=11, n=3):
    r = np.random.default_rng(seed)
    return [{"x": r.standard_normal(shape).astype(np.float32)} for _ in range(n)]


@lru_cache(maxsize=None)
def _quantized(name, act="uint8", per_channel=True, method="minmax", percentile=99.99):
    build, shape = MODELS[name]
    return po.quantize_model(build(), _feeds(shape), activation_dtype=act, per_channel=per_channel,
                             method=method, percentile=percentile)


def _inits(m):
    return {t.name: numpy_helper.to_array(t) for t in m.graph.initializer}


@pytest.mark.parametrize("per_channel", [True, False], ids=["per_channel", "per_tensor"])
@pytest.mark.parametrize("act", ["uint8", "int8"])
@pytest.mark.parametrize("name", list(MODELS))
def test_matches_ort_and_runs_int8_kernels(model_backend, name, act, per_channel):
    q, report = _quantized(name, act, per_channel)
    onnx.checker.check_model(q, full_check=True)
    x = np.random.default_rng(99).standard_normal(MODELS[name][1]).astype(np.float32)
    sess = po.InferenceSession(q.SerializeToString(), backend=model_backend)
    got = [np.asarray(v) for v in sess.run(None, {"x": x})]
    want = ort_run(q, {"x": x})
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w)
    ops = [n.op_type for n in sess.graph.nodes]
    assert "Conv" not in ops and "Gemm" not in ops and "MatMul" not in ops, sess.graph
    fused = [n for n in sess.graph.nodes if n.op_type in ("QLinearConv", "QLinearGemm", "QLinearMatMul")]
    assert len(fused) == N_QUANTIZED[name] == len(report.layers)
    for n in fused:
        want_kernel = "qlinear_matmul:" if n.op_type == "QLinearMatMul" else "qconv2d:"
        assert n.kernel.startswith(want_kernel), sess.graph
    if model_backend == "numpy":   # the report runs the model on numpy
        assert [e.kernel for e in report.layers] == [n.kernel for n in fused]
    # the activations' zero points have the requested type
    for t, (_, z) in report.activations.items():
        assert np.iinfo(act).min <= z <= np.iinfo(act).max


@pytest.mark.parametrize("name", ["cnn", "cnn_gemm", "mlp"])
def test_weights_symmetric_per_channel_and_bias_scale(name):
    q, report = _quantized(name)
    build, _ = MODELS[name]
    float_inits = _inits(build())
    inits = _inits(q)
    dqs = {n.output[0]: n for n in q.graph.node if n.op_type == "DequantizeLinear"}
    for node in q.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        wdq = dqs[node.input[1]]
        wq, ws, wz = (inits[i] for i in wdq.input)
        w = float_inits[wdq.input[0][:-len("_quantized")]]
        axis = 1 if node.op_type == "MatMul" else 0
        red = tuple(i for i in range(w.ndim) if i != axis)
        assert wq.dtype == np.int8 and wz.dtype == np.int8 and not wz.any()
        assert ws.shape == (w.shape[axis],) and helper.get_attribute_value(wdq.attribute[0]) == axis
        np.testing.assert_array_equal(ws, np.abs(w).max(axis=red).astype(np.float32) / np.float32(127))
        assert (np.abs(wq).max(axis=red) == 127).all() and wq.min() >= -127
        # dequantized weight within half a step of the float weight
        step = np.expand_dims(ws, red).astype(np.float64)
        assert (np.abs(wq * step - w) <= step / 2 * (1 + 1e-6)).all()
        if node.op_type != "MatMul" and len(node.input) > 2:
            bq, bs, bz = (inits[i] for i in dqs[node.input[2]].input)
            xs = inits[dqs[node.input[0]].input[1]]
            assert bq.dtype == np.int32 and not bz.any()
            np.testing.assert_array_equal(bs, (xs * ws).astype(np.float32))


def test_minmax_scale_of_the_input_is_the_calibration_range():
    q, report = _quantized("cnn")
    xs = np.concatenate([f["x"].ravel() for f in _feeds((4, 3, 8, 8))]).astype(np.float64)
    lo, hi = min(0.0, xs.min()), max(0.0, xs.max())
    s, z = report.activations["x"]
    assert s == pytest.approx((hi - lo) / 255, rel=1e-6)
    assert z == int(np.rint(-lo / ((hi - lo) / 255)))


def test_percentile_clips_outliers_and_100_is_minmax():
    build, shape = MODELS["cnn"]
    feeds = _feeds(shape)
    feeds[0]["x"][0, 0, 0, 0] = 40.0    # one outlier far beyond the standard normal's range
    mm = po.quantize_model(build(), feeds)[1]
    pc = po.quantize_model(build(), feeds, method="percentile", percentile=99.9)[1]
    full = po.quantize_model(build(), feeds, method="percentile", percentile=100)[1]
    assert full.activations == mm.activations
    # the outlier sets the min-max range of x; the 99.9th percentile ignores it
    assert mm.activations["x"][0] > 40 / 255 and pc.activations["x"][0] < 8 / 255
    for t, (s, _) in pc.activations.items():
        assert s <= mm.activations[t][0] * (1 + 1e-6), t
    # the outlier saturates at the clipped range, so the first layer's worst error grows
    assert pc.layers[0].max_abs > mm.layers[0].max_abs


def test_report_matches_ort_errors(tmp_path):
    build, shape = MODELS["cnn_gemm"]
    feeds = _feeds(shape)
    path = tmp_path / "q.onnx"
    q, report = po.quantize_model(build(), feeds, output_path=path)
    assert onnx.load(str(path)) == q
    diffs = [np.abs(ort_run(q, f)[0].astype(np.float64) - ort_run(build(), f)[0]) for f in feeds]
    assert report.outputs[0].max_abs == pytest.approx(max(float(d.max()) for d in diffs), rel=1e-5)
    assert report.outputs[0].mean_abs == pytest.approx(np.mean(np.concatenate([d.ravel() for d in diffs])), rel=1e-5)
    assert report.layers[-1].max_abs == pytest.approx(report.outputs[0].max_abs, rel=1e-5)   # Gemm -> y
    assert [e.node for e in report.layers] == [n.name for n in q.graph.node if n.op_type in ("Conv", "Gemm")]
    assert "Gemm_5" in str(report) and report.layer("Gemm_5").kernel == "qconv2d:numpy"


def test_residual_add_stays_float_reading_dequantized_values():
    q, report = _quantized("residual")
    add = next(n for n in q.graph.node if n.op_type == "Add")
    producers = {o: n for n in q.graph.node for o in n.output}
    assert all(producers[i].op_type == "DequantizeLinear" for i in add.input)
    # one DequantizeLinear per reader, so that the Conv's group fuses
    readers = {}
    for n in q.graph.node:
        for i in n.input:
            readers[i] = readers.get(i, 0) + 1
    assert all(readers[n.output[0]] == 1 for n in q.graph.node if n.op_type == "DequantizeLinear")


def test_unquantizable_nodes_stay_float():
    r = np.random.default_rng(2)
    nodes = [mk("Conv", ["x", "w"], ["c"], name="runtime_weight"), mk("MatMul", ["f", "W2"], ["y"], name="mm")]
    nodes.insert(1, mk("Flatten", ["c"], ["f"]))
    g = helper.make_graph(nodes, "f", [helper.make_tensor_value_info("x", TP.FLOAT, ["N", 2, 4, 4]),
                                       helper.make_tensor_value_info("w", TP.FLOAT, [3, 2, 3, 3])],
                          [helper.make_tensor_value_info("y", TP.FLOAT, ["N", 4])],
                          [numpy_helper.from_array(r.standard_normal((12, 4)).astype(np.float32), "W2")])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)])
    m.ir_version = 8
    feed = {"x": r.standard_normal((2, 2, 4, 4)).astype(np.float32), "w": r.standard_normal((3, 2, 3, 3)).astype(np.float32)}
    q, report = po.quantize_model(m, [feed])
    assert "runtime_weight" in report.float_nodes and [e.node for e in report.layers] == ["mm"]
    np.testing.assert_array_equal(po.InferenceSession(q.SerializeToString(), backend="numpy").run(None, feed)[0],
                                  ort_run(q, feed)[0])


@pytest.mark.parametrize("kwargs, exc, words", [
    ({"calibration_inputs": []}, ValueError, "calibration_inputs is empty"),
    ({"calibration_inputs": {"x": 1}}, TypeError, "calibration_inputs"),
    ({"calibration_inputs": [np.zeros(3)]}, TypeError, "calibration_inputs[0]"),
    ({"method": "kl"}, ValueError, "method"),
    ({"method": "percentile", "percentile": 100.5}, ValueError, "percentile"),
    ({"method": "percentile", "percentile": 50}, ValueError, "percentile"),
    ({"percentile": "99"}, TypeError, "percentile"),
    ({"activation_dtype": "int4"}, ValueError, "activation_dtype"),
    ({"per_channel": 1}, TypeError, "per_channel"),
], ids=["empty", "dict", "not_feeds", "method", "percentile_high", "percentile_50", "percentile_str", "dtype", "per_channel"])
def test_bad_arguments(kwargs, exc, words):
    build, shape = MODELS["mlp"]
    args = {"calibration_inputs": _feeds(shape, n=1), **kwargs}
    with pytest.raises(exc, match=words.replace("[", r"\[").replace("]", r"\]")):
        po.quantize_model(build(), args.pop("calibration_inputs"), **args)


def test_per_channel_needs_opset_13():
    m = float_mlp()
    m.opset_import[0].version = 11
    with pytest.raises(ValueError, match="per_channel=True needs opset >= 13"):
        po.quantize_model(m, _feeds((6, 20), n=1))
    q, _ = po.quantize_model(m, _feeds((6, 20), n=1), per_channel=False)
    x = _feeds((6, 20), seed=3, n=1)[0]
    np.testing.assert_array_equal(po.InferenceSession(q.SerializeToString(), backend="numpy").run(None, x)[0],
                                  ort_run(q, x)[0])


# ---------------------------------------------------------------------------------------------
# The digits CNN
# ---------------------------------------------------------------------------------------------
def _example():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "examples" / "quantize_digits.py"
    spec = importlib.util.spec_from_file_location("quantize_digits_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_digits_cnn_loses_at_most_one_point(model_backend):
    pytest.importorskip("sklearn", reason="the digits data come from scikit-learn")
    qd = _example()

    res = qd.quantize(method="minmax")
    x, y = res["x_test"], res["y_test"]
    if model_backend == "emulator":   # the emulator runs every kernel thread by thread: a slice
        x, y = x[:24], y[:24]
    q = res["model"].SerializeToString()
    got = po.InferenceSession(q, backend=model_backend).run(None, {"x": x})[0]
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    want = ort_run(res["model"], {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)
    np.testing.assert_array_equal(got.argmax(1), want.argmax(1))
    if model_backend == "numpy":
        float_acc = qd.accuracy(po.InferenceSession(str(qd.FLOAT_MODEL), backend="numpy"), x, y)
        int8_acc = float(np.mean(got.argmax(1) == y))
        assert len(y) == 360 and float_acc - int8_acc <= 0.01, (float_acc, int8_acc)


@pytest.mark.parametrize("act", ["uint8", "int8"])
@pytest.mark.parametrize("name", ["cnn_gemm_relu", "mlp"])
def test_symmetric_activations(name, act):
    """Zero point 0 (int8) / 128 (uint8). ONNX Runtime then keeps a Relu before a QuantizeLinear
    (its zero point is not the type's minimum) and may run that Conv in float on dequantized
    values, so agreement is to one quantization step of the output (a float32 rounding
    difference before the QuantizeLinear), not bit for bit."""
    build, shape = MODELS[name]
    q, report = po.quantize_model(build(), _feeds(shape), activation_dtype=act, symmetric_activations=True)
    assert {z for _, z in report.activations.values()} == {0 if act == "int8" else 128}
    x = np.random.default_rng(8).standard_normal(shape).astype(np.float32)
    got = po.InferenceSession(q.SerializeToString(), backend="numpy").run(None, {"x": x})[0]
    step = report.activations[report.layers[-1].name][0]
    np.testing.assert_allclose(got, ort_run(q, {"x": x})[0], rtol=0, atol=step * 1.0001)
