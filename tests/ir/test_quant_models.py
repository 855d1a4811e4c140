"""INT8 models through InferenceSession: made with onnxruntime.quantization (QDQ, QOperator, dynamic)
and with onnx.helper, compared with ONNX Runtime CPU on numpy and the emulator.

The quantized outputs are integers (or floats dequantized from them), so the comparison is exact
where both run the same integer arithmetic: the int8 kernels' exact sums and float32 requantization
(quantization.py's docstring) are what ONNX Runtime's QLinearConv / QLinearMatMul compute. The one
known disagreement, ONNX Runtime's u8 x s8 AVX2 kernels saturating int16 pair sums, needs large
products of uint8 activations and int8 weights; the calibrated models here stay far from it (their
weights are small), and the helper-built integer ops are checked against an int64 reference
written here. Groups the QDQ pass must leave as written are compared with ONNX Runtime with its
graph optimizations off (the float op runs there too) to one quantization step, the most a float32
rounding difference before a QuantizeLinear can move a value.
"""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import helper, numpy_helper, onnx, ort_run
from .test_models import model_backend  # noqa: F401  (fixture)

import pygpu_ops as po

ortq = pytest.importorskip("onnxruntime.quantization", reason="needs onnxruntime's quantization tools")
TP = onnx.TensorProto
mk = helper.make_node


def _model(nodes, inputs, outputs, inits, opset=13):
    g = helper.make_graph(nodes, "q", inputs, outputs, [numpy_helper.from_array(np.asarray(v), k) for k, v in inits.items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _vi(name, elem, shape):
    return helper.make_tensor_value_info(name, elem, shape)


def float_cnn(gemm: bool = False, relu_last: bool = False):
    """Conv(3->8, pad 1) + Relu, Conv(8->6, stride 2) + Relu, Flatten, then MatMul + Add or Gemm."""
    r = np.random.default_rng(0)
    w = dict(W1=r.standard_normal((8, 3, 3, 3)) * 0.3, B1=r.standard_normal(8) * 0.1,
             W2=r.standard_normal((6, 8, 3, 3)) * 0.2, B2=r.standard_normal(6) * 0.1,
             W3=r.standard_normal((5, 96) if gemm else (96, 5)) * 0.2, B3=r.standard_normal(5) * 0.1)
    w = {k: v.astype(np.float32) for k, v in w.items()}
    nodes = [mk("Conv", ["x", "W1", "B1"], ["c1"], pads=[1, 1, 1, 1]), mk("Relu", ["c1"], ["r1"]),
             mk("Conv", ["r1", "W2", "B2"], ["c2"], strides=[2, 2], pads=[1, 1, 1, 1]), mk("Relu", ["c2"], ["r2"]),
             mk("Flatten", ["r2"], ["f"])]
    if gemm:
        nodes.append(mk("Gemm", ["f", "W3", "B3"], ["g"], transB=1))
        nodes.append(mk("Relu", ["g"], ["y"]) if relu_last else mk("Identity", ["g"], ["y"]))
    else:
        nodes += [mk("MatMul", ["f", "W3"], ["m"]), mk("Add", ["m", "B3"], ["y"])]
    return _model(nodes, [_vi("x", TP.FLOAT, ["N", 3, 8, 8])], [_vi("y", TP.FLOAT, ["N", 5])], w)


def float_mlp():
    r = np.random.default_rng(1)
    w = dict(W1=(r.standard_normal((20, 16)) * 0.3).astype(np.float32), B1=(r.standard_normal(16) * 0.1).astype(np.float32),
             W2=(r.standard_normal((16, 4)) * 0.3).astype(np.float32))
    nodes = [mk("MatMul", ["x", "W1"], ["m1"]), mk("Add", ["m1", "B1"], ["a1"]), mk("Relu", ["a1"], ["r1"]),
             mk("MatMul", ["r1", "W2"], ["y"])]
    return _model(nodes, [_vi("x", TP.FLOAT, ["N", 20])], [_vi("y", TP.FLOAT, ["N", 4])], w)


class _Reader(ortq.CalibrationDataReader):
    def __init__(self, batches):
        self.it = iter([{"x": b} for b in batches])

    def get_next(self):
        return next(self.it, None)


def _calibration(shape, seed=1):
    r = np.random.default_rng(seed)
    return [r.standard_normal(shape).astype(np.float32) for _ in range(3)]


def quantized(tmp_path, m, shape, **kw):
    src, dst = tmp_path / "float.onnx", tmp_path / "int8.onnx"
    onnx.save(m, str(src))
    ortq.quantize_static(str(src), str(dst), _Reader(_calibration(shape)), **kw)
    return onnx.load(str(dst))


def _ort_plain(m, feed):
    """ONNX Runtime with its graph optimizations off: the model's ops exactly as written."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    return ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, feed)


def _run(m, feed, backend, optimize=True):
    sess = po.InferenceSession(m.SerializeToString(), backend=backend, optimize=optimize)
    return sess, [np.asarray(v) for v in sess.run(None, feed)]


X_CNN = np.random.default_rng(5).standard_normal((3, 3, 8, 8)).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Static quantization: QDQ and QOperator formats
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("per_channel", [False, True], ids=["per_tensor", "per_channel"])
@pytest.mark.parametrize("act", ["QUInt8", "QInt8"])
@pytest.mark.parametrize("fmt", ["QDQ", "QOperator"])
def test_static_cnn_matches_ort(tmp_path, model_backend, fmt, act, per_channel):
    q = quantized(tmp_path, float_cnn(), (4, 3, 8, 8), quant_format=getattr(ortq.QuantFormat, fmt),
                  per_channel=per_channel, activation_type=getattr(ortq.QuantType, act),
                  op_types_to_quantize=["Conv", "MatMul"])
    feed = {"x": X_CNN}
    sess, got = _run(q, feed, model_backend)
    want = ort_run(q, feed)
    np.testing.assert_array_equal(got[0], want[0])
    convs = [n for n in sess.graph.nodes if "conv" in n.kernel.lower()]
    assert len(convs) == 2 and all(n.kernel.startswith("qconv2d:") for n in convs), sess.graph


def test_qdq_cnn_runs_int8_kernels(tmp_path, model_backend):
    q = quantized(tmp_path, float_cnn(), (4, 3, 8, 8), quant_format=ortq.QuantFormat.QDQ, per_channel=True,
                  op_types_to_quantize=["Conv", "MatMul"])
    sess, _ = _run(q, {"x": X_CNN}, model_backend)
    assert "fuse_qdq" in sess.applied_passes
    ops = [n.op_type for n in sess.graph.nodes]
    assert "Conv" not in ops and ops.count("QLinearConv") == 2 and "QLinearMatMul" in ops, sess.graph
    want = "qconv2d:numpy" if model_backend == "numpy" else "qconv2d:qconv_gemm_dp4a"
    assert [n.kernel for n in sess.graph.nodes if n.op_type == "QLinearConv"] == [want, want]
    plain, _ = _run(q, {"x": X_CNN}, model_backend, optimize=False)
    assert [n.op_type for n in plain.graph.nodes].count("Conv") == 2   # as written: float Conv


@pytest.mark.parametrize("relu_last", [False, True], ids=["gemm", "gemm_relu"])
def test_qdq_gemm_fuses_to_qconv(tmp_path, model_backend, relu_last):
    q = quantized(tmp_path, float_cnn(gemm=True, relu_last=relu_last), (4, 3, 8, 8),
                  quant_format=ortq.QuantFormat.QDQ, per_channel=True, op_types_to_quantize=["Conv", "Gemm", "Relu"])
    feed = {"x": X_CNN}
    sess, got = _run(q, feed, model_backend)
    np.testing.assert_array_equal(got[0], ort_run(q, feed)[0])
    gemms = [n for n in sess.graph.nodes if n.op_type == "QLinearGemm"]
    assert len(gemms) == 1 and gemms[0].kernel.startswith("qconv2d:"), sess.graph


# ---------------------------------------------------------------------------------------------
# Hand-built QDQ groups: the Relu epilogue, and the cases the pass must leave as written
# ---------------------------------------------------------------------------------------------
def qdq_conv(two_readers=False, runtime_scale=False, weight_axis=0, float_bias=False):
    """Q(x) -> DQ -> Conv(DQ(W), DQ(B)) -> Relu -> Q -> DQ -> y; each option breaks one precondition."""
    r = np.random.default_rng(2)
    wq = r.integers(-60, 61, (4, 3, 3, 3)).astype(np.int8)
    ws = (r.random(4 if weight_axis == 0 else 3) * 0.01 + 0.005).astype(np.float32)
    xs = np.float32(0.02)
    inits = dict(xz=np.uint8(128), wq=wq, wz=np.zeros(ws.shape, np.int8), ws=ws,
                 ys=np.float32(0.05), yz=np.uint8(3))
    bias = r.integers(-500, 500, 4).astype(np.int32)
    inputs = [_vi("x", TP.FLOAT, ["N", 3, 6, 6])]
    if runtime_scale:
        inputs.append(_vi("xs", TP.FLOAT, []))
    else:
        inits["xs"] = xs
    nodes = [mk("QuantizeLinear", ["x", "xs", "xz"], ["xq"]), mk("DequantizeLinear", ["xq", "xs", "xz"], ["xd"]),
             mk("DequantizeLinear", ["wq", "ws", "wz"], ["wd"], axis=weight_axis)]
    if float_bias:
        inits["b"] = (bias * 1e-4).astype(np.float32)
        bname = "b"
    else:
        # At scale x_scale * w_scale[o] (one w_scale where the weight is quantized along its inputs).
        bs = xs * (ws if ws.size == 4 else np.full(4, ws[0]))
        inits.update(bq=bias, bs=bs.astype(np.float32), bz=np.zeros(4, np.int32))
        nodes.append(mk("DequantizeLinear", ["bq", "bs", "bz"], ["bd"], axis=0))
        bname = "bd"
    nodes += [mk("Conv", ["xd", "wd", bname], ["c"], pads=[1, 1, 1, 1]), mk("Relu", ["c"], ["rc"]),
              mk("QuantizeLinear", ["rc", "ys", "yz"], ["yq"]), mk("DequantizeLinear", ["yq", "ys", "yz"], ["y"])]
    outputs = [_vi("y", TP.FLOAT, ["N", 4, 6, 6])]
    if two_readers:
        nodes.append(mk("Relu", ["xd"], ["x2"]))
        outputs.append(_vi("x2", TP.FLOAT, ["N", 3, 6, 6]))
    return _model(nodes, inputs, outputs, inits)


def _feed(runtime_scale=False):
    f = {"x": np.random.default_rng(7).standard_normal((2, 3, 6, 6)).astype(np.float32)}
    if runtime_scale:
        f["xs"] = np.array(0.02, np.float32)
    return f


def test_qdq_conv_relu_fuses_into_epilogue(model_backend):
    m = qdq_conv()
    sess, got = _run(m, _feed(), model_backend)
    (node,) = [n for n in sess.graph.nodes if n.op_type == "QLinearConv"]
    assert node.attr("activation") == "relu" and node.kernel.endswith("+relu") and node.kernel.startswith("qconv2d:")
    assert not any(n.op_type in ("Conv", "Relu") for n in sess.graph.nodes)
    np.testing.assert_array_equal(got[0], ort_run(m, _feed())[0])


@pytest.mark.parametrize("case", ["two_readers", "runtime_scale", "weight_axis", "float_bias"])
def test_qdq_fusion_does_not_fire(model_backend, case):
    kw = {"weight_axis": 1} if case == "weight_axis" else {case: True}
    m = qdq_conv(**kw)
    feed = _feed(case == "runtime_scale")
    sess, got = _run(m, feed, model_backend)
    assert "fuse_qdq" not in sess.applied_passes
    # The float convolution runs (Conv + Relu fused into its epilogue by fuse_conv_activation).
    assert [n.kernel.split(":")[0] for n in sess.graph.nodes].count("conv2d") == 1 and not any(
        n.op_type == "QLinearConv" for n in sess.graph.nodes), sess.graph
    want = _ort_plain(m, feed)
    step = 0.05   # y_scale: a float32 rounding difference moves a quantized value by at most one step
    assert np.abs(got[0] - want[0]).max() <= step * 1.0001
    assert np.mean(got[0] != want[0]) < 0.01
    for g, w in zip(got[1:], want[1:]):
        np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------------------------------------
# Dynamic quantization
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("net", ["mlp", "cnn"])
def test_dynamic_matches_ort(tmp_path, model_backend, net):
    m = float_mlp() if net == "mlp" else float_cnn()
    src, dst = tmp_path / "f.onnx", tmp_path / "d.onnx"
    onnx.save(m, str(src))
    ortq.quantize_dynamic(str(src), str(dst))
    q = onnx.load(str(dst))
    ops = {n.op_type for n in q.graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger", "Cast", "Mul"} <= ops
    x = np.random.default_rng(3).standard_normal((5, 20) if net == "mlp" else (2, 3, 8, 8)).astype(np.float32)
    _, got = _run(q, {"x": x}, model_backend)
    want = ort_run(q, {"x": x})[0]
    # The integer parts are exact; the float epilogue (Cast, Mul by the scales, Add) is elementwise
    # float32 on both sides, its products possibly associated differently: a few ulps.
    np.testing.assert_allclose(got[0], want, rtol=1e-6, atol=1e-6 * np.abs(want).max())


def test_dynamic_quantize_linear_parameters(model_backend):
    m = _model([mk("DynamicQuantizeLinear", ["x"], ["y", "s", "z"])], [_vi("x", TP.FLOAT, [3, 7])],
               [_vi("y", TP.UINT8, [3, 7]), _vi("s", TP.FLOAT, []), _vi("z", TP.UINT8, [])], {}, opset=11)
    for x in (np.random.default_rng(4).standard_normal((3, 7)).astype(np.float32) * 3,
              np.abs(np.random.default_rng(5).standard_normal((3, 7))).astype(np.float32),
              np.zeros((3, 7), np.float32)):
        _, got = _run(m, {"x": x}, model_backend)
        for g, w in zip(got, ort_run(m, {"x": x})):
            assert g.dtype == w.dtype and g.shape == w.shape
            np.testing.assert_array_equal(g, w)


# ---------------------------------------------------------------------------------------------
# QOperator ops built by hand, against ONNX Runtime and int64 references
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("qtype", [TP.INT8, TP.UINT8], ids=["int8", "uint8"])
@pytest.mark.parametrize("axis", [None, 1, -1], ids=["per_tensor", "axis1", "axis-1"])
def test_quantize_dequantize_linear(model_backend, qtype, axis):
    dt = np.int8 if qtype == TP.INT8 else np.uint8
    shape = (2, 3, 4)
    c = 1 if axis is None else shape[axis]
    s = (np.arange(1, c + 1) * 0.05).astype(np.float32).reshape(() if axis is None else (c,))
    z = np.array((np.arange(c) * 7 - 5) if dt == np.int8 else np.arange(c) * 60 + 3, dt).reshape(s.shape)
    kw = {} if axis is None else {"axis": axis}
    m = _model([mk("QuantizeLinear", ["x", "s", "z"], ["q"], **kw), mk("DequantizeLinear", ["q", "s", "z"], ["y"], **kw)],
               [_vi("x", TP.FLOAT, list(shape))], [_vi("q", qtype, list(shape)), _vi("y", TP.FLOAT, list(shape))],
               dict(s=s, z=z))
    x = (np.random.default_rng(6).standard_normal(shape) * 4).astype(np.float32)
    x.reshape(-1)[:3] = [0.025, -0.075, 1e3]   # ties to even and saturation
    _, got = _run(m, {"x": x}, model_backend)
    for g, w in zip(got, ort_run(m, {"x": x})):
        np.testing.assert_array_equal(g, w)


def _int_conv_ref(x, w, zx, zw, pads, group):
    """Direct-loop int64 ConvInteger: sum (x - zx) * (w - zw[o]), padding at x's zero point."""
    N, C, H, W = x.shape
    O, Cg, KH, KW = w.shape
    xp = np.full((N, C, H + 2 * pads, W + 2 * pads), zx, np.int64)
    xp[:, :, pads:pads + H, pads:pads + W] = x
    xp -= zx
    OH, OW = H + 2 * pads - KH + 1, W + 2 * pads - KW + 1
    out = np.zeros((N, O, OH, OW), np.int64)
    Og = O // group
    for o in range(O):
        g = o // Og
        wo = w[o].astype(np.int64) - np.broadcast_to(zw, (O,))[o]
        for i in range(OH):
            for j in range(OW):
                out[:, o, i, j] = (xp[:, g * Cg:(g + 1) * Cg, i:i + KH, j:j + KW] * wo).sum(axis=(1, 2, 3))
    return out


@pytest.mark.parametrize("wdt", [np.int8, np.uint8])
@pytest.mark.parametrize("group", [1, 2])
def test_conv_integer(model_backend, wdt, group):
    r = np.random.default_rng(8)
    x = r.integers(0, 256, (2, 4, 5, 5)).astype(np.uint8)
    info = np.iinfo(wdt)
    w = r.integers(info.min, info.max + 1, (6, 4 // group, 3, 3)).astype(wdt)
    zw = r.integers(info.min, info.max + 1, 6).astype(wdt)
    m = _model([mk("ConvInteger", ["x", "w", "zx", "zw"], ["y"], pads=[1, 1, 1, 1], group=group)],
               [_vi("x", TP.UINT8, ["N", 4, 5, 5])], [_vi("y", TP.INT32, ["N", 6, 5, 5])],
               dict(w=w, zx=np.uint8(131), zw=zw))
    _, got = _run(m, {"x": x}, model_backend)
    np.testing.assert_array_equal(got[0], _int_conv_ref(x, w, 131, zw, 1, group))


@pytest.mark.parametrize("adt", [np.int8, np.uint8])
def test_matmul_integer_and_qlinear_matmul(model_backend, adt):
    r = np.random.default_rng(9)
    info = np.iinfo(adt)
    a = r.integers(info.min, info.max + 1, (2, 3, 17)).astype(adt)   # 3-D A: rows flattened
    b = r.integers(-40, 41, (17, 5)).astype(np.int8)
    za, zb = adt(info.min + 100), np.arange(-2, 3).astype(np.int8)
    bs = (np.arange(1, 6) * 0.003).astype(np.float32)
    m = _model([mk("MatMulInteger", ["a", "b", "za", "zb"], ["acc"]),
                mk("QLinearMatMul", ["a", "as", "za", "b", "bs", "zb", "ys", "yz"], ["y"])],
               [_vi("a", TP.INT8 if adt == np.int8 else TP.UINT8, [2, 3, 17])],
               [_vi("acc", TP.INT32, [2, 3, 5]), _vi("y", TP.INT8 if adt == np.int8 else TP.UINT8, [2, 3, 5])],
               dict(b=b, za=za, zb=zb, bs=bs, ys=np.float32(0.7), yz=adt(info.min + 120), **{"as": np.float32(0.02)}))
    _, got = _run(m, {"a": a}, model_backend)
    ref = np.einsum("bmk,kn->bmn", a.astype(np.int64) - int(za), b.astype(np.int64) - zb.astype(np.int64))
    np.testing.assert_array_equal(got[0], ref)
    want = ort_run(m, {"a": a})
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got[1], want[1])


@pytest.mark.parametrize("case", ["qlinearconv_uint8_weights", "quantize_int16", "conv_integer_per_channel_x_zp"])
def test_refused_at_creation(case):
    if case == "qlinearconv_uint8_weights":
        m = _model([mk("QLinearConv", ["x", "s", "z", "w", "s", "z", "s", "z"], ["y"])],
                   [_vi("x", TP.UINT8, [1, 2, 4, 4])], [_vi("y", TP.UINT8, [1, 2, 4, 4])],
                   dict(s=np.float32(0.1), z=np.uint8(0), w=np.ones((2, 2, 1, 1), np.uint8)))
    elif case == "quantize_int16":
        m = _model([mk("QuantizeLinear", ["x", "s", "z"], ["y"])], [_vi("x", TP.FLOAT, [4])], [_vi("y", TP.INT16, [4])],
                   dict(s=np.float32(0.1), z=np.int16(0)), opset=21)
    else:
        m = _model([mk("ConvInteger", ["x", "w", "zx"], ["y"])], [_vi("x", TP.UINT8, [1, 2, 4, 4])],
                   [_vi("y", TP.INT32, [1, 2, 4, 4])], dict(w=np.ones((2, 2, 1, 1), np.int8), zx=np.zeros(2, np.uint8)))
    with pytest.raises(NotImplementedError):
        po.InferenceSession(m.SerializeToString(), backend="numpy")


@pytest.mark.parametrize("pads,strides", [([0, 1, 2, 0], [2, 2]), ([1, 0, 0, 2], [1, 1])], ids=["s2", "s1"])
def test_qlinear_conv_asymmetric_pads(model_backend, pads, strides):
    """ONNX pads with begin != end go to qconv2d as (begin, end) pairs; the padding holds x's zero
    point, as ONNX Runtime's QLinearConv."""
    r = np.random.default_rng(12)
    x = r.integers(0, 256, (2, 3, 7, 6)).astype(np.uint8)
    w = r.integers(-127, 128, (4, 3, 3, 3)).astype(np.int8)
    bias = r.integers(-2000, 2000, 4).astype(np.int32)
    m = _model([mk("QLinearConv", ["x", "sx", "zx", "w", "sw", "zw", "sy", "zy", "b"], ["y"], pads=pads,
                   strides=strides)],
               [_vi("x", TP.UINT8, ["N", 3, 7, 6])], [_vi("y", TP.UINT8, ["N", 4, "H", "W"])],
               dict(w=w, sx=np.float32(0.02), zx=np.uint8(117), sw=np.float32(0.01), zw=np.int8(0),
                    sy=np.float32(0.05), zy=np.uint8(128), b=bias))
    _, got = _run(m, {"x": x}, model_backend)
    want = ort_run(m, {"x": x})[0]
    assert got[0].shape == want.shape
    np.testing.assert_array_equal(got[0], want)
