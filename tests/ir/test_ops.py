"""One small model per op and per opset-dependent semantic, on numpy and the emulator, against ONNX
Runtime CPU and (where the op computes) a float64 NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import conv_ref, check, has, helper, model, ort_run, rand

import pygpu_ops as po

mk = helper.make_node


# ---------------------------------------------------------------------------------------------
# Conv
# ---------------------------------------------------------------------------------------------
CONV_CASES = [
    # id, x shape, w shape, attrs, pads (t, l, b, r) for the reference, stride, dilation, group
    ("pads1", (2, 3, 5, 5), (4, 3, 3, 3), dict(pads=[1, 1, 1, 1]), (1, 1, 1, 1), (1, 1), (1, 1), 1),
    ("stride2_dil2", (1, 2, 7, 6), (3, 2, 3, 2), dict(strides=[2, 1], dilations=[2, 2], pads=[1, 0, 1, 0]),
     (1, 0, 1, 0), (2, 1), (2, 2), 1),
    ("group2", (1, 4, 5, 5), (6, 2, 3, 3), dict(group=2), (0, 0, 0, 0), (1, 1), (1, 1), 2),
    ("depthwise", (1, 3, 5, 4), (3, 1, 3, 3), dict(group=3, pads=[1, 1, 1, 1]), (1, 1, 1, 1), (1, 1), (1, 1), 3),
    ("same_upper_even_k", (1, 2, 5, 5), (2, 2, 2, 2), dict(auto_pad="SAME_UPPER"), (0, 0, 1, 1), (1, 1), (1, 1), 1),
    ("same_upper_s2", (1, 2, 6, 6), (2, 2, 3, 3), dict(auto_pad="SAME_UPPER", strides=[2, 2]),
     (0, 0, 1, 1), (2, 2), (1, 1), 1),   # total pad (3-1)*2+3-6 = 1: the extra one at the end
    ("same_lower_s2", (1, 2, 6, 5), (2, 2, 3, 2), dict(auto_pad="SAME_LOWER", strides=[2, 2]),
     (1, 1, 0, 0), (2, 2), (1, 1), 1),   # totals 1 and 1: at the beginning
    ("split_1201", (1, 2, 5, 6), (2, 2, 3, 3), dict(pads=[1, 0, 2, 1], strides=[2, 3]), (1, 0, 2, 1),
     (2, 3), (1, 1), 1),
    ("same_lower_odd_k", (1, 2, 5, 5), (2, 2, 3, 3), dict(auto_pad="SAME_LOWER"), (1, 1, 1, 1), (1, 1), (1, 1), 1),
    ("valid", (1, 2, 5, 4), (2, 2, 3, 3), dict(auto_pad="VALID"), (0, 0, 0, 0), (1, 1), (1, 1), 1),
    ("explicit_same_split", (1, 2, 4, 4), (2, 2, 2, 2), dict(pads=[0, 0, 1, 1]), (0, 0, 1, 1), (1, 1), (1, 1), 1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=[c[0] for c in CONV_CASES])
def test_conv(host_backend, case):
    _, xs, ws, attrs, pads, stride, dil, group = case
    x, w, b = rand(*xs), rand(*ws, seed=1), rand(ws[0], seed=2)
    m = model([mk("Conv", ["x", "w", "b"], ["y"], **attrs)], {"x": x}, {"y": 4}, {"w": w, "b": b}, opset=11)
    check(m, {"x": x}, host_backend, conv_ref(x, w, b, stride, pads, dil, group))


def test_conv1d_and_same_upper_stride2_symmetric(host_backend):
    x, w = rand(2, 3, 9), rand(4, 3, 3, seed=1)
    check(model([mk("Conv", ["x", "w"], ["y"], pads=[2, 2], dilations=[2])], {"x": x}, {"y": 3}, {"w": w}),
          {"x": x}, host_backend)
    x4, w4 = rand(1, 2, 7, 7), rand(2, 2, 3, 3, seed=3)     # out 4, total (4-1)*2+3-7 = 2: symmetric
    check(model([mk("Conv", ["x", "w"], ["y"], auto_pad="SAME_UPPER", strides=[2, 2])], {"x": x4}, {"y": 4},
                {"w": w4}, opset=9), {"x": x4}, host_backend, conv_ref(x4, w4, None, (2, 2), (1, 1, 1, 1), (1, 1), 1))


@pytest.mark.parametrize("attrs, shape", [
    (dict(pads=[1, 0, 0, 0]), (1, 2, 5, 5)),
    (dict(pads=[0, 0, 1, 1], strides=[2, 2]), (1, 2, 5, 5)),
    (dict(auto_pad="SAME_LOWER"), (1, 2, 5, 5)),           # even kernel: extra pad at the top
    (dict(auto_pad="SAME_UPPER", strides=[2, 2]), (1, 2, "H", "W")),   # the split depends on H, W
], ids=["top_only", "split_stride2", "same_lower_even_k", "same_s2_symbolic"])
def test_conv_asymmetric(host_backend, attrs, shape):
    """Pads once refused (begin != end, SAME at stride 2 on symbolic sizes) run, as ONNX Runtime."""
    x = rand(1, 2, 5, 5)
    m = model([mk("Conv", ["x", "w"], ["y"], **attrs, name="c1")], {"x": x}, {"y": 4}, {"w": rand(2, 2, 2, 2)},
              input_shapes={"x": shape})
    check(m, {"x": x}, host_backend)
    if "H" in shape:
        x7 = rand(1, 2, 7, 6, seed=4)   # another size: another split, same session
        sess = po.InferenceSession(m, backend=host_backend)
        np.testing.assert_allclose(sess.run(None, {"x": x7})[0], ort_run(m, {"x": x7})[0], rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------------------------------------
# Gemm and MatMul
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("ta, tb, c_shape, alpha, beta, opset", [
    (0, 0, (5,), 1.0, 1.0, 13), (1, 0, (3, 5), 0.5, 2.0, 9), (0, 1, (3, 1), 1.0, -1.0, 11),
    (1, 1, (1, 5), 2.0, 0.0, 7), (0, 0, (), 1.0, 3.0, 13), (0, 1, None, 1.5, 1.0, 11)])
def test_gemm(host_backend, ta, tb, c_shape, alpha, beta, opset):
    a = rand(4, 3) if ta else rand(3, 4)
    b = rand(5, 4, seed=1) if tb else rand(4, 5, seed=1)
    inits = {"b": b}
    names = ["a", "b"]
    ref = alpha * ((a.T if ta else a).astype(np.float64) @ (b.T if tb else b).astype(np.float64))
    if c_shape is not None:
        c = rand(*c_shape, seed=2) if c_shape else np.float32(0.75)
        inits["c"], names = np.asarray(c, np.float32), names + ["c"]
        ref = ref + beta * np.asarray(c, np.float64)
    m = model([mk("Gemm", names, ["y"], transA=ta, transB=tb, alpha=alpha, beta=beta)], {"a": a}, {"y": 2}, inits,
              opset=opset)
    check(m, {"a": a}, host_backend, ref)


@pytest.mark.parametrize("sa, sb", [((3, 4), (4, 5)), ((2, 1, 3, 4), (5, 4, 2)), ((4,), (2, 4, 3)),
                                    ((2, 3, 4), (4,)), ((4,), (4,))])
def test_matmul(host_backend, sa, sb):
    a, b = rand(*sa), rand(*sb, seed=1)
    m = model([mk("MatMul", ["a", "b"], ["y"])], {"a": a, "b": b}, {"y": len(np.matmul(a, b).shape)})
    check(m, {"a": a, "b": b}, host_backend, np.matmul(a.astype(np.float64), b.astype(np.float64)))


# ---------------------------------------------------------------------------------------------
# Activations and elementwise
# ---------------------------------------------------------------------------------------------
def test_relu_leaky_relu(host_backend):
    x = rand(2, 3, 4)
    m = model([mk("Relu", ["x"], ["r"]), mk("LeakyRelu", ["x"], ["l"], alpha=0.2)], {"x": x}, {"r": 3, "l": 3})
    x64 = x.astype(np.float64)
    check(m, {"x": x}, host_backend, [np.maximum(x64, 0), np.where(x64 < 0, 0.2 * x64, x64)])


@has("sigmoid", "tanh")
def test_sigmoid_tanh(host_backend):
    x = rand(3, 7) * 4
    m = model([mk("Sigmoid", ["x"], ["s"]), mk("Tanh", ["x"], ["t"])], {"x": x}, {"s": 2, "t": 2})
    x64 = x.astype(np.float64)
    check(m, {"x": x}, host_backend, [1 / (1 + np.exp(-x64)), np.tanh(x64)])


@has("clip")
@pytest.mark.parametrize("opset", [7, 11, 13])
def test_clip_attrs_then_inputs(host_backend, opset):
    x = rand(4, 5) * 3
    if opset < 11:
        node, inits = mk("Clip", ["x"], ["y"], min=-0.5, max=1.0), {}
    else:
        node, inits = mk("Clip", ["x", "lo", "hi"], ["y"]), {"lo": np.float32(-0.5), "hi": np.float32(1.0)}
    m = model([node, mk("Clip", ["x", ""] if opset >= 11 else ["x"], ["z"])], {"x": x}, {"y": 2, "z": 2},
              {k: np.asarray(v) for k, v in inits.items()}, opset=opset)
    check(m, {"x": x}, host_backend, [np.clip(x.astype(np.float64), -0.5, 1.0), x.astype(np.float64)])


@has("add", "sub", "mul", "div")
def test_binary_broadcast(host_backend):
    a, b, c = rand(2, 3, 4), rand(3, 1, seed=1), rand(4, seed=2) + 3
    nodes = [mk("Add", ["a", "b"], ["s"]), mk("Sub", ["s", "c"], ["d"]), mk("Mul", ["d", "b"], ["p"]),
             mk("Div", ["p", "c"], ["y"])]
    m = model(nodes, {"a": a}, {"y": 3}, {"b": b, "c": c})
    a64, b64, c64 = (v.astype(np.float64) for v in (a, b, c))
    check(m, {"a": a}, host_backend, ((a64 + b64) - c64) * b64 / c64)


@pytest.mark.parametrize("node, missing", [
    (mk("Sigmoid", ["x"], ["y"], name="n"), "sigmoid"), (mk("Add", ["x", "x"], ["y"], name="n"), "add"),
    (mk("BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], name="n"), "batch_norm"),
    (mk("Transpose", ["x"], ["y"], name="n"), "transpose"), (mk("Concat", ["x", "x"], ["y"], axis=1, name="n"), "concat"),
], ids=["sigmoid", "add", "batch_norm", "transpose", "concat"])
def test_refuses_missing_elementwise(node, missing):
    if hasattr(po, missing):
        pytest.skip(f"pygpu_ops.{missing} exists in this build: its handler runs (see the op tests)")
    m = model([node], {"x": rand(2, 3)}, {"y": 2}, {"s": np.ones(3, np.float32)})
    with pytest.raises(NotImplementedError, match=rf"node 'n' \(opset 13\): needs pygpu_ops.{missing}"):
        po.InferenceSession(m, backend="numpy")


# ---------------------------------------------------------------------------------------------
# Pooling
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("attrs, opset", [
    (dict(kernel_shape=[2, 2], strides=[2, 2]), 8),
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1]), 11),
    (dict(kernel_shape=[3, 2], strides=[2, 3], ceil_mode=1), 12),
    (dict(kernel_shape=[1, 1], strides=[3, 3], ceil_mode=1), 12),          # last window would start past the end
    (dict(kernel_shape=[2, 2], dilations=[2, 2], pads=[1, 1, 1, 1]), 12),
    (dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER"), 11),
], ids=["k2s2_opset8", "pads", "ceil", "ceil_drop_last", "dilations", "same_upper"])
def test_max_pool(host_backend, attrs, opset):
    x = rand(2, 3, 5, 5)
    m = model([mk("MaxPool", ["x"], ["y"], **attrs)], {"x": x}, {"y": 4}, opset=opset)
    check(m, {"x": x}, host_backend)


def test_max_pool_reference(host_backend):
    x = rand(1, 2, 6, 6)
    ref = x.astype(np.float64).reshape(1, 2, 3, 2, 3, 2).max(axis=(3, 5))
    check(model([mk("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], strides=[2, 2])], {"x": x}, {"y": 4}),
          {"x": x}, host_backend, ref)


@pytest.mark.parametrize("attrs, opset", [
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1]), 7),
    (dict(kernel_shape=[3, 3], pads=[1, 1, 1, 1], count_include_pad=1), 7),
    (dict(kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1], ceil_mode=1, count_include_pad=1), 11),
    (dict(kernel_shape=[2, 3], strides=[2, 2], ceil_mode=1), 19),
], ids=["exclude_pad", "include_pad", "ceil_include_pad", "ceil_opset19"])
def test_average_pool(host_backend, attrs, opset):
    x = rand(1, 2, 5, 4)
    check(model([mk("AveragePool", ["x"], ["y"], **attrs)], {"x": x}, {"y": 4}, opset=opset), {"x": x}, host_backend)


@pytest.mark.parametrize("op, attrs, why", [
    ("MaxPool", dict(kernel_shape=[2, 2], pads=[2, 2, 2, 2]), "not smaller than the effective kernel"),
    ("AveragePool", dict(kernel_shape=[3, 3], pads=[0, 3, 0, 0]), "not smaller than the effective kernel"),
    ("AveragePool", dict(kernel_shape=[2, 2], dilations=[2, 2]), "dilations"),
], ids=["big_pad", "big_end_pad", "avg_dilations"])
def test_pool_refused(op, attrs, why):
    m = model([mk(op, ["x"], ["y"], **attrs, name="p")], {"x": rand(1, 1, 5, 5)}, {"y": 4}, opset=19)
    with pytest.raises(NotImplementedError, match=rf"{op} node 'p' \(opset 19\): .*{why}"):
        po.InferenceSession(m, backend="numpy")


def test_global_average_pool(host_backend):
    x = rand(2, 3, 4, 5)
    check(model([mk("GlobalAveragePool", ["x"], ["y"])], {"x": x}, {"y": 4}), {"x": x}, host_backend,
          x.astype(np.float64).mean(axis=(2, 3), keepdims=True))


# ---------------------------------------------------------------------------------------------
# BatchNormalization, Softmax
# ---------------------------------------------------------------------------------------------
@has("batch_norm")
@pytest.mark.parametrize("opset", [7, 9, 15])
def test_batch_norm(host_backend, opset):
    x = rand(2, 3, 4, 4)
    s, b, mean, var = rand(3, seed=1), rand(3, seed=2), rand(3, seed=3), np.abs(rand(3, seed=4)) + 0.5
    m = model([mk("BatchNormalization", ["x", "s", "b", "m", "v"], ["y"], epsilon=1e-3)], {"x": x}, {"y": 4},
              {"s": s, "b": b, "m": mean, "v": var}, opset=opset)
    c = lambda v: v.astype(np.float64)[None, :, None, None]  # noqa: E731
    check(m, {"x": x}, host_backend, (x - c(mean)) / np.sqrt(c(var) + 1e-3) * c(s) + c(b))


def test_batch_norm_training_refused():
    m = model([mk("BatchNormalization", ["x", "s", "s", "s", "s"], ["y"], training_mode=1, name="bn")],
              {"x": rand(2, 3)}, {"y": 2}, {"s": np.ones(3, np.float32)}, opset=15)
    with pytest.raises(NotImplementedError, match=r"BatchNormalization node 'bn' \(opset 15\)"):
        po.InferenceSession(m, backend="numpy")


def _softmax64(x, axes, log):
    x = x.astype(np.float64)
    e = np.exp(x - x.max(axis=axes, keepdims=True))
    s = e / e.sum(axis=axes, keepdims=True)
    return np.log(s) if log else s


@pytest.mark.parametrize("op", ["Softmax", "LogSoftmax"])
@pytest.mark.parametrize("opset, axis, axes", [
    (11, 1, (1, 2)),       # before 13: coerced to 2-D, one softmax over dims 1 and 2
    (13, 1, (1,)),         # from 13: along axis 1 only
    (9, None, (1, 2)),     # default axis 1, coerced
    (13, None, (2,)),      # default axis -1
    (11, 2, (2,)),
])
def test_softmax_opsets(host_backend, op, opset, axis, axes):
    x = rand(2, 3, 5) * 3
    attrs = {} if axis is None else {"axis": axis}
    m = model([mk(op, ["x"], ["y"], **attrs)], {"x": x}, {"y": 3}, opset=opset)
    check(m, {"x": x}, host_backend, _softmax64(x, axes, op == "LogSoftmax"))


# ---------------------------------------------------------------------------------------------
# Shape ops
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("axis", [0, 2, -1])
def test_flatten(host_backend, axis):
    x = rand(2, 3, 4)
    m = model([mk("Flatten", ["x"], ["y"], axis=axis), mk("Relu", ["y"], ["z"])], {"x": x}, {"z": 2})
    want = x.reshape(int(np.prod(x.shape[:axis % 3])), -1)
    check(m, {"x": x}, host_backend, np.maximum(want.astype(np.float64), 0))


@pytest.mark.parametrize("spec, allowzero, opset", [([0, -1], 0, 13), ([-1, 4], 0, 7), ([2, 0, 4, 1], 0, 14),
                                                    ([0, 3, 4], 1, 14)])
def test_reshape(host_backend, spec, allowzero, opset):
    x = rand(2, 3, 4) if not allowzero else np.zeros((0, 12), np.float32)
    attrs = {"allowzero": allowzero} if opset >= 14 else {}
    m = model([mk("Reshape", ["x", "s"], ["y"], **attrs), mk("Relu", ["y"], ["z"])], {"x": x}, {"z": len(spec)},
              {"s": np.array(spec, np.int64)}, opset=opset)
    check(m, {"x": x}, host_backend)


@pytest.mark.parametrize("opset", [11, 13])
def test_squeeze_unsqueeze_attrs_then_inputs(host_backend, opset):
    x = rand(2, 1, 3)
    if opset < 13:
        nodes = [mk("Squeeze", ["x"], ["s"], axes=[1]), mk("Unsqueeze", ["s"], ["u"], axes=[0, -1])]
        inits = {}
    else:
        nodes = [mk("Squeeze", ["x", "a1"], ["s"]), mk("Unsqueeze", ["s", "a2"], ["u"])]
        inits = {"a1": np.array([1], np.int64), "a2": np.array([0, -1], np.int64)}
    m = model(nodes + [mk("Relu", ["u"], ["y"]), mk("Squeeze", ["x"], ["all"]), mk("Relu", ["all"], ["z"])],
              {"x": x}, {"y": 4, "z": 2}, inits, opset=opset)
    _, got = check(m, {"x": x}, host_backend)
    assert got[0].shape == (1, 2, 3, 1) and got[1].shape == (2, 3)


@pytest.mark.parametrize("opset", [7, 12, 13])
def test_identity_dropout(host_backend, opset):
    x = rand(3, 4)
    if opset >= 12:
        node, inits = mk("Dropout", ["x", "r", "t"], ["d"]), {"r": np.float32(0.5), "t": np.array(False)}
    else:
        node, inits = mk("Dropout", ["x"], ["d"], ratio=0.5), {}
    m = model([mk("Identity", ["x"], ["i"]), node, mk("Relu", ["d"], ["y"])], {"x": x}, {"y": 2},
              {k: np.asarray(v) for k, v in inits.items()}, opset=opset)
    check(m, {"x": x}, host_backend, np.maximum(x.astype(np.float64), 0))


def test_dropout_training_refused():
    m = model([mk("Dropout", ["x", "", "t"], ["y"], name="d")], {"x": rand(2, 3), "t": np.array(True)}, {"y": 2},
              opset=13)
    with pytest.raises(NotImplementedError, match=r"Dropout node 'd' \(opset 13\): input training_mode"):
        po.InferenceSession(m, backend="numpy")


@has("transpose")
def test_transpose(host_backend):
    x = rand(2, 3, 4)
    m = model([mk("Transpose", ["x"], ["y"], perm=[2, 0, 1]), mk("Transpose", ["x"], ["z"])], {"x": x},
              {"y": 3, "z": 3})
    check(m, {"x": x}, host_backend, [x.transpose(2, 0, 1).astype(np.float64), x.T.astype(np.float64)])


@has("concat")
def test_concat(host_backend):
    a, b = rand(2, 3, 2), rand(2, 1, 2, seed=1)
    m = model([mk("Concat", ["a", "b", "a"], ["y"], axis=-2)], {"a": a}, {"y": 3}, {"b": b}, opset=11)
    check(m, {"a": a}, host_backend, np.concatenate([a, b, a], axis=1).astype(np.float64))


@pytest.mark.parametrize("opset", [9, 13, 15])
def test_shape_subgraph_reshape(host_backend, opset):
    """The exporter's ``x.view(x.size(0), -1)``: Shape -> Gather -> Unsqueeze -> Concat -> Reshape,
    with a Constant, a Cast and a Slice on the shape data, at one symbolic batch size after another."""
    x = rand(3, 2, 2, 3)
    unsq = (mk("Unsqueeze", ["n", "zero1"], ["n1"]) if opset >= 13 else mk("Unsqueeze", ["n"], ["n1"], axes=[0]))
    sl = (mk("Slice", ["s", "zero1", "one1"], ["s0"]) if opset >= 10 else
          mk("Slice", ["s"], ["s0"], starts=[0], ends=[1]))
    shape_node = mk("Shape", ["x"], ["s"], start=0) if opset >= 15 else mk("Shape", ["x"], ["s"])
    nodes = [shape_node, mk("Constant", [], ["zero"], value=helper.make_tensor("z", 7, [], [0])),
             mk("Gather", ["s", "zero"], ["n"], axis=0), unsq, sl,
             mk("Cast", ["s0"], ["s0c"], to=7), mk("Concat", ["n1", "minus1"], ["shp"], axis=0),
             mk("Reshape", ["x", "shp"], ["f"]), mk("Relu", ["f"], ["y"]), mk("Identity", ["s0c"], ["batch"])]
    inits = {"zero1": np.array([0], np.int64), "one1": np.array([1], np.int64), "minus1": np.array([-1], np.int64)}
    m = model(nodes, {"x": x}, {"y": 2, "batch": (1, np.int64)}, inits, opset=opset,
              input_shapes={"x": ["N", 2, 2, 3]})
    sess, got = check(m, {"x": x}, host_backend, [np.maximum(x.reshape(3, -1).astype(np.float64), 0),
                                                  np.array([3.0])])
    assert got[1].dtype == np.int64
    assert [n.kernel for n in sess.graph.nodes if n.op_type == "Gather"] == ["host:gather"]
    x1 = rand(1, 2, 2, 3, seed=5)
    y1 = sess.run(["y"], {"x": x1})[0]
    np.testing.assert_array_equal(y1, np.maximum(x1.reshape(1, 12), 0))
