"""The graph passes (pygpu_ops/ir/passes.py), each alone on a small graph: the graph before and after
(node counts, op types, initializers), a pass whose precondition fails returns the very graph it got,
and the session's outputs with ``optimize=True`` against ``optimize=False`` and a float64 reference.

Bound used for "the outputs before and after are equal": folding BN into the weights changes only
roundings (W * a is rounded once instead of conv(x, W) being scaled after), so both paths are
within a few float32 ulps of the float64 reference per term of the reduction. The tests assert
|optimized - float64| <= 2 * max|plain - float64| + 8 * eps32 * max|float64| (the
flash-attention rule: the rewritten graph's error at most about twice the plain graph's), and
|optimized - plain| <= 8 * eps32 * max(1, max|plain|) (about 1e-6 relative to the output's scale).
Graphs the passes leave as they are give bit-identical outputs.
"""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import conv_ref, helper, model, ort_run, rand

import pygpu_ops as po
from pygpu_ops.ir import onnx_import, passes

mk = helper.make_node
EPS32 = float(np.finfo(np.float32).eps)


def imported(m):
    return onnx_import.to_graph(onnx_import.load(m))


def snapshot(g):
    """Everything a pass may change, as plain values (attrs by repr: they may hold arrays)."""
    return ([(n.op_type, n.domain, n.name, tuple(n.inputs), tuple(n.outputs), repr(sorted(n.attrs.items())))
             for n in g.nodes],
            {k: (v.dtype, v.shape, v.tobytes()) for k, v in g.initializers.items()},
            tuple(g.inputs), tuple(g.outputs))


def ops_of(g):
    return [n.op_type for n in g.nodes]


def both(m, feed, backend):
    """Outputs of ``m`` with optimize=False and optimize=True, and the optimized session."""
    plain = [np.asarray(v) for v in po.InferenceSession(m, backend=backend, optimize=False).run(None, feed)]
    sess = po.InferenceSession(m, backend=backend)
    return plain, [np.asarray(v) for v in sess.run(None, feed)], sess


def assert_same_within_bound(plain, opt, ref=None):
    for p, o in zip(plain, opt):
        assert p.shape == o.shape and p.dtype == o.dtype
        scale = max(1.0, float(np.abs(p).max()))
        assert float(np.abs(o - p).max()) <= 8 * EPS32 * scale
    if ref is not None:
        for p, o, r in zip(plain, opt, ref):
            plain_err = float(np.abs(p - r).max())
            assert float(np.abs(o - r).max()) <= 2 * plain_err + 8 * EPS32 * float(np.abs(r).max())


def bn_params(c, seed):
    rng = np.random.default_rng(seed)
    return {"s": rng.uniform(0.5, 2.0, c).astype(np.float32), "bb": rng.standard_normal(c).astype(np.float32),
            "mu": rng.standard_normal(c).astype(np.float32), "var": rng.uniform(0.1, 3.0, c).astype(np.float32)}


def bn_ref(y, p, eps=1e-5, axis=1):
    shape = [1] * y.ndim
    shape[axis] = -1
    f = {k: v.astype(np.float64).reshape(shape) for k, v in p.items()}
    return (y - f["mu"]) / np.sqrt(f["var"] + eps) * f["s"] + f["bb"]


BN_NODE = dict(inputs=["s", "bb", "mu", "var"], epsilon=1e-5)


def bn(x, y, name="bn"):
    return mk("BatchNormalization", [x] + BN_NODE["inputs"], [y], epsilon=BN_NODE["epsilon"], name=name)


# ---------------------------------------------------------------------------------------------
# fold_constants
# ---------------------------------------------------------------------------------------------
def shape_model():
    """Reshape x (N, 3, 2, 2) to (N, C, -1) with C from Shape(x)[1], a Constant -1, and a float
    Constant scale: the exporter's shape subgraph, half of it foldable (C), half not (N)."""
    nodes = [mk("Shape", ["x"], ["s"], name="shape"),
             mk("Gather", ["s", "i0"], ["n"], axis=0, name="gather_n"),
             mk("Gather", ["s", "i1"], ["c"], axis=0, name="gather_c"),
             mk("Constant", [], ["minus1"], value=helper.make_tensor("m", 7, [1], [-1]), name="const_m1"),
             mk("Constant", [], ["k"], value=helper.make_tensor("k", 1, [1], [0.5]), name="const_k"),
             mk("Concat", ["n", "c", "minus1"], ["shp"], axis=0, name="concat"),
             mk("Reshape", ["x", "shp"], ["r"], name="reshape"),
             mk("Mul", ["r", "k"], ["y"], name="scale")]
    inits = {"i0": np.array([0], np.int64), "i1": np.array([1], np.int64)}
    return model(nodes, {"x": rand(2, 3, 2, 2)}, {"y": 3}, inits, input_shapes={"x": ["N", 3, 2, 2]})


def test_fold_constants_alone():
    g = imported(shape_model())
    before = snapshot(g)
    out = passes.fold_constants(g)
    assert snapshot(g) == before                    # the input graph is not edited
    assert len(g.nodes) == 8 and len(out.nodes) == 5
    # C = Shape(x)[1] = 3 and both Constants fold; Shape and Gather(0) give N, which is symbolic.
    assert ops_of(out) == ["Shape", "Gather", "Concat", "Reshape", "Mul"]
    assert out.initializers["c"].tolist() == [3] and out.initializers["c"].dtype == np.int64
    assert out.initializers["minus1"].tolist() == [-1]
    assert out.initializers["k"].dtype == np.float32 and out.initializers["k"].tolist() == [0.5]
    assert passes.fold_constants(out) is out        # nothing left to fold


def test_fold_constants_keeps_0d():
    """A 0-d constant stays 0-d (Gather with a scalar index drops the axis)."""
    nodes = [mk("Constant", [], ["zero"], value=helper.make_tensor("z", 7, [], [0])),
             mk("Shape", ["x"], ["s"]), mk("Gather", ["s", "zero"], ["n"], axis=0),
             mk("Unsqueeze", ["n", "ax"], ["n1"]), mk("Concat", ["n1", "m1"], ["shp"], axis=0),
             mk("Reshape", ["x", "shp"], ["y"])]
    m = model(nodes, {"x": rand(2, 3, 2)}, {"y": 2}, {"ax": np.array([0], np.int64), "m1": np.array([-1], np.int64)},
              input_shapes={"x": ["N", 3, 2]})
    out = passes.fold_constants(imported(m))
    assert out.initializers["zero"].shape == ()
    for n in (1, 4):
        x = rand(n, 3, 2, seed=n)
        plain, opt, _ = both(m, {"x": x}, "numpy")
        np.testing.assert_array_equal(opt[0], x.reshape(n, 6))


def test_fold_constants_outputs(host_backend):
    m = shape_model()
    plain_sess = po.InferenceSession(m, backend=host_backend, optimize=False)
    sess = po.InferenceSession(m, backend=host_backend)
    for n in (2, 5):     # one session, two batch sizes: N stayed symbolic
        x = rand(n, 3, 2, 2, seed=n)
        got = sess.run(None, {"x": x})[0]
        np.testing.assert_array_equal(got, plain_sess.run(None, {"x": x})[0])
        np.testing.assert_array_equal(got, x.reshape(n, 3, 4) * np.float32(0.5))
    # the Gather index i1 is read by nobody once C is folded: dead-node elimination drops it
    assert sess.applied_passes == ["fold_constants", "eliminate_dead_nodes"]
    assert "i1" not in sess.graph.initializers and len(sess._plans) == 2


# ---------------------------------------------------------------------------------------------
# fold_batch_norm
# ---------------------------------------------------------------------------------------------
def conv_bn_model(group=1, bias=True, relu=False):
    cin, cout = 4, 4 if group > 1 else 3
    inits = {"w": rand(cout, cin // group, 3, 3, seed=11), **bn_params(cout, 12)}
    if bias:
        inits["b"] = rand(cout, seed=13)
    nodes = [mk("Conv", ["x", "w"] + (["b"] if bias else []), ["c"], pads=[1, 1, 1, 1], group=group, name="conv"),
             bn("c", "z" if relu else "y")]
    if relu:
        nodes.append(mk("Relu", ["z"], ["y"], name="relu"))
    return model(nodes, {"x": rand(2, cin, 5, 5)}, {"y": 4}, inits, input_shapes={"x": ["N", cin, 5, 5]}), inits


def test_fold_bn_into_conv_alone():
    m, inits = conv_bn_model()
    g = imported(m)
    before = snapshot(g)
    out = passes.fold_batch_norm(g)
    assert snapshot(g) == before
    assert ops_of(g) == ["Conv", "BatchNormalization"] and ops_of(out) == ["Conv"]
    conv = out.nodes[0]
    assert conv.outputs == ["y"] and conv.inputs[0] == "x"
    # The folded weights: float64, rounded once (checked against the formula written out here).
    a = inits["s"].astype(np.float64) / np.sqrt(inits["var"].astype(np.float64) + 1e-5)
    w2 = (inits["w"].astype(np.float64) * a[:, None, None, None]).astype(np.float32)
    b2 = ((inits["b"].astype(np.float64) - inits["mu"]) * a + inits["bb"]).astype(np.float32)
    np.testing.assert_array_equal(out.initializers[conv.inputs[1]], w2)
    np.testing.assert_array_equal(out.initializers[conv.inputs[2]], b2)
    assert passes.fold_batch_norm(out) is out


@pytest.mark.parametrize("group, bias", [(1, True), (1, False), (4, True)], ids=["dense", "nobias", "depthwise"])
def test_fold_bn_into_conv_outputs(host_backend, group, bias):
    m, inits = conv_bn_model(group, bias)
    x = rand(2, 4, 5, 5, seed=21)
    plain, opt, sess = both(m, {"x": x}, host_backend)
    assert ops_of(sess.graph) == ["Conv"] and "BatchNormalization" not in ops_of(sess.graph)
    ref = bn_ref(conv_ref(x, inits["w"], inits.get("b"), (1, 1), (1, 1, 1, 1), (1, 1), group), inits)
    assert_same_within_bound(plain, opt, [ref])


def gemm_bn_model(trans_b, with_c, alpha=0.75, beta=1.5):
    inits = {"B": rand(*((5, 6) if trans_b else (6, 5)), seed=31), **bn_params(5, 32)}
    if with_c:
        inits["C"] = rand(1, 5, seed=33)
    nodes = [mk("Gemm", ["a", "B"] + (["C"] if with_c else []), ["g"], transB=int(trans_b), alpha=alpha, beta=beta,
                name="fc"), bn("g", "y")]
    return model(nodes, {"a": rand(3, 6)}, {"y": 2}, inits, input_shapes={"a": ["N", 6]}), inits


@pytest.mark.parametrize("trans_b, with_c", [(False, True), (True, True), (True, False)])
def test_fold_bn_into_gemm(host_backend, trans_b, with_c):
    m, inits = gemm_bn_model(trans_b, with_c)
    g = imported(m)
    out = passes.fold_batch_norm(g)
    assert ops_of(out) == ["Gemm"] and out.nodes[0].attrs["beta"] == 1.0 and out.nodes[0].attrs["alpha"] == 0.75
    a = rand(4, 6, seed=34)
    plain, opt, sess = both(m, {"a": a}, host_backend)
    assert ops_of(sess.graph) == ["Gemm"]
    b = inits["B"].astype(np.float64)
    y = 0.75 * a.astype(np.float64) @ (b.T if trans_b else b)
    if with_c:
        y = y + 1.5 * inits["C"].astype(np.float64)
    assert_same_within_bound(plain, opt, [bn_ref(y, inits)])


def test_fold_bn_preconditions():
    """Not folded: the Conv output has a second reader; it is a graph output; the BN follows a Relu;
    a BN parameter is a runtime input. Each time the pass returns the very graph."""
    w, p = rand(3, 2, 1, 1, seed=41), bn_params(3, 42)
    x = {"x": rand(1, 2, 3, 3)}
    cases = [
        ([mk("Conv", ["x", "w"], ["c"]), bn("c", "y"), mk("Relu", ["c"], ["r"])], {"y": 4, "r": 4}, {}),
        ([mk("Conv", ["x", "w"], ["c"]), bn("c", "y")], {"y": 4, "c": 4}, {}),
        ([mk("Conv", ["x", "w"], ["c"]), mk("Relu", ["c"], ["r"]), bn("r", "y")], {"y": 4}, {}),
        ([mk("Conv", ["x", "w"], ["c"]), bn("c", "y")], {"y": 4}, {"s": p["s"]}),
    ]
    for nodes, outs, runtime in cases:
        inits = {"w": w, **{k: v for k, v in p.items() if k not in runtime}}
        g = imported(model(nodes, {**x, **runtime}, outs, inits))
        assert passes.fold_batch_norm(g) is g, [n.op_type for n in nodes]


# ---------------------------------------------------------------------------------------------
# fuse_conv_activation
# ---------------------------------------------------------------------------------------------
def test_fuse_conv_relu_alone(host_backend):
    inits = {"w": rand(3, 2, 3, 3, seed=51), "b": rand(3, seed=52)}
    nodes = [mk("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"), mk("Relu", ["c"], ["y"], name="relu")]
    m = model(nodes, {"x": rand(2, 2, 4, 4)}, {"y": 4}, inits)
    g = imported(m)
    out = passes.fuse_conv_activation(g)
    assert ops_of(g) == ["Conv", "Relu"] and ops_of(out) == ["FusedConv"]
    fused = out.nodes[0]
    assert (fused.domain, fused.name, fused.inputs, fused.outputs) == (passes.DOMAIN, "conv", ["x", "w", "b"], ["y"])
    assert fused.attrs["activation"] == "relu" and fused.attrs["pads"] == [1, 1, 1, 1]
    assert passes.fuse_conv_activation(out) is out
    x = rand(2, 2, 4, 4, seed=53)
    plain, opt, sess = both(m, {"x": x}, host_backend)
    variant = "numpy" if host_backend == "numpy" else "conv_gemm_warptile"
    assert [n.kernel for n in sess.graph.nodes] == [f"conv2d:{variant}+relu"]
    # relu(conv + bias) in the epilogue is the same float32 arithmetic as the separate Relu
    np.testing.assert_array_equal(opt[0], plain[0])
    ref = np.maximum(conv_ref(x, inits["w"], inits["b"], (1, 1), (1, 1, 1, 1), (1, 1), 1), 0)
    np.testing.assert_allclose(opt[0], ref, rtol=1e-5, atol=1e-5)


def test_fuse_conv1d_relu():
    m = model([mk("Conv", ["x", "w"], ["c"]), mk("Relu", ["c"], ["y"])], {"x": rand(2, 2, 7)}, {"y": 3},
              {"w": rand(3, 2, 3, seed=54)})
    plain, opt, sess = both(m, {"x": rand(2, 2, 7, seed=55)}, "numpy")
    assert ops_of(sess.graph) == ["FusedConv"] and sess.graph.nodes[0].kernel == "conv1d:numpy+relu"
    np.testing.assert_array_equal(opt[0], plain[0])


def clip_node(x, y, lo, hi, opset, name="clip"):
    """Clip(lo, hi): attributes before opset 11, initializer inputs "lo" / "hi" from it."""
    if opset < 11:
        return mk("Clip", [x], [y], min=lo, max=hi, name=name), {}
    return mk("Clip", [x, "lo", "hi"], [y], name=name), {"lo": np.array(lo, np.float32), "hi": np.array(hi, np.float32)}


def fused_alone(m, rewrite, ops, fused_op, name):
    """``rewrite`` of ``m``'s graph, whose ops are ``ops`` (a producer, then Relu / Clip last), and
    its fused node: the producer and the activation replaced by one ``fused_op`` node named as the
    producer, writing the activation's output "y" with the activation's epilogue name; the input
    graph not edited."""
    g = imported(m)
    before = snapshot(g)
    out = rewrite(g)
    assert snapshot(g) == before
    assert ops_of(g) == ops and ops_of(out) == ops[:-2] + [fused_op]
    fused = out.nodes[-1]
    assert (fused.domain, fused.name, fused.outputs) == (passes.DOMAIN, name, ["y"])
    assert fused.attrs == {"activation": "relu" if ops[-1] == "Relu" else "relu6"}
    return out, fused


def activation_node(x, y, act, opset, inits):
    """Relu, or Clip(0, 6) (its bound initializers added to ``inits``)."""
    if act == "Relu":
        return mk("Relu", [x], [y], name="relu")
    clip, bounds = clip_node(x, y, 0.0, 6.0, opset)
    inits.update(bounds)
    return clip


@pytest.mark.parametrize("opset", [10, 13])
def test_fuse_conv_clip06(host_backend, opset):
    """Conv + Clip(0, 6) -> FusedConv(activation="relu6"); outputs equal the unfused graph's and are
    within float32 tolerance of ONNX Runtime and of a float64 reference. x is scaled so that
    outputs pass 6 and fall below 0, and holds a NaN."""
    inits = {"w": rand(5, 3, 3, 3, seed=56), "b": rand(5, seed=57)}
    clip, bounds = clip_node("c", "y", 0.0, 6.0, opset)
    m = model([mk("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"), clip], {"x": rand(2, 3, 5, 7)},
              {"y": 4}, {**inits, **bounds}, opset=opset)
    g = imported(m)
    out = passes.fuse_conv_activation(g)
    assert ops_of(g) == ["Conv", "Clip"] and ops_of(out) == ["FusedConv"]
    assert out.nodes[0].attrs["activation"] == "relu6" and out.nodes[0].outputs == ["y"]
    x = rand(2, 3, 5, 7, seed=58) * 4
    plain, opt, sess = both(m, {"x": x}, host_backend)
    variant = "numpy" if host_backend == "numpy" else "conv_gemm_warptile"
    assert [n.kernel for n in sess.graph.nodes] == [f"conv2d:{variant}+relu6"]
    assert "lo" not in sess.graph.initializers    # the bounds are read by nobody once fused
    np.testing.assert_array_equal(opt[0], plain[0])
    ref = np.clip(conv_ref(x, inits["w"], inits["b"], (1, 1), (1, 1, 1, 1), (1, 1), 1), 0, 6)
    assert (ref == 6).any() and (ref == 0).any()
    np.testing.assert_allclose(opt[0], ref, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(opt[0], ort_run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)
    xn = x.copy()
    xn[1, 2, 3, 4] = np.nan
    plain, opt, _ = both(m, {"x": xn}, host_backend)
    assert np.isnan(opt[0]).any()
    np.testing.assert_array_equal(opt[0], plain[0])


def test_unfused_activations_stay(host_backend):
    """Not fused into the conv epilogue: Clip with bounds other than exactly (0, 6) (here (0, 5),
    (-1, 6), (-0.0, 6), (0, no max)), Clip(0, 6) of a Conv output that is also a graph output, and
    a Conv whose output has a second reader: the fusion pass returns the very graph and the
    session gives the unfused graph's outputs bit for bit."""
    w = rand(2, 2, 1, 1, seed=61)
    lo_hi = {"lo": np.array(0, np.float32), "hi": np.array(5, np.float32)}
    cases = [
        ([mk("Conv", ["x", "w"], ["c"]), mk("Clip", ["c", "lo", "hi"], ["y"])], {"y": 4}, {"w": w, **lo_hi}, {}, 13),
        ([mk("Conv", ["x", "w"], ["c"]), mk("Clip", ["c"], ["y"], min=-1.0, max=6.0)], {"y": 4}, {"w": w}, {}, 10),
        ([mk("Conv", ["x", "w"], ["c"]), mk("Clip", ["c"], ["y"], min=-0.0, max=6.0)], {"y": 4}, {"w": w}, {}, 10),
        ([mk("Conv", ["x", "w"], ["c"]), mk("Clip", ["c", "lo"], ["y"])], {"y": 4}, {"w": w, "lo": lo_hi["lo"]}, {},
         13),
        ([mk("Conv", ["x", "w"], ["c"]), mk("Clip", ["c", "lo", "hi"], ["y"])], {"y": 4, "c": 4},
         {"w": w, "lo": lo_hi["lo"], "hi": np.array(6, np.float32)}, {}, 13),
        ([mk("Conv", ["x", "w"], ["c"]), mk("Relu", ["c"], ["y"]), mk("Sigmoid", ["c"], ["z"])], {"y": 4, "z": 4},
         {"w": w}, {}, 13),
    ]
    x = rand(1, 2, 2, 2, seed=63) * 8
    for nodes, outs, inits, runtime, opset in cases:
        m = model(nodes, {"x": x, **runtime}, outs, inits, opset=opset)
        g = imported(m)
        before = snapshot(g)
        assert passes.fuse_conv_activation(g) is g and snapshot(g) == before
        plain, opt, sess = both(m, {"x": x, **runtime}, host_backend)
        assert ops_of(sess.graph) == ops_of(g) and sess.applied_passes == []
        for p, o in zip(plain, opt):
            np.testing.assert_array_equal(o, p)


# ---------------------------------------------------------------------------------------------
# fuse_gemm_activation
# ---------------------------------------------------------------------------------------------
def gemm_act_model(trans_b=True, c_shape=(5,), act="Relu", opset=13, beta=1.0, alpha=1.0, extra_reader=False):
    """Flatten(x) (N, 6) -> Gemm with B (5, 6) / (6, 5) and C of ``c_shape`` -> Relu / Clip(0, 6)."""
    inits = {"B": rand(*((5, 6) if trans_b else (6, 5)), seed=64)}
    if c_shape is not None:
        inits["C"] = rand(*c_shape, seed=65) if c_shape else np.array(0.75, np.float32)
    nodes = [mk("Flatten", ["x"], ["f"], name="flat"),
             mk("Gemm", ["f", "B"] + (["C"] if c_shape is not None else []), ["h"], transB=int(trans_b), beta=beta,
                alpha=alpha, name="fc")]
    nodes.append(activation_node("h", "y", act, opset, inits))
    outs = {"y": 2}
    if extra_reader:
        nodes.append(mk("Sigmoid", ["h"], ["z"], name="sig"))
        outs["z"] = 2
    return model(nodes, {"x": rand(3, 2, 3)}, outs, inits, opset=opset, input_shapes={"x": ["N", 2, 3]}), inits


def gemm_ref(x, inits, trans_b, c_shape, act, alpha=1.0, beta=1.0):
    b = inits["B"].astype(np.float64)
    y = alpha * x.reshape(len(x), -1).astype(np.float64) @ (b.T if trans_b else b)
    if c_shape is not None:
        y = y + beta * inits["C"].astype(np.float64)
    return np.maximum(y, 0) if act == "Relu" else np.clip(y, 0, 6)


@pytest.mark.parametrize("trans_b, c_shape, act, opset", [
    (True, (5,), "Relu", 13), (False, (1, 5), "Relu", 13), (True, None, "Clip", 13), (False, (), "Clip", 10),
    (True, (1,), "Relu", 11)], ids=["transB-bias-relu", "B-row-relu", "nobias-clip", "B-scalar-clip10",
                                    "bias1-relu11"])
def test_fuse_gemm_activation(host_backend, trans_b, c_shape, act, opset):
    """Gemm + bias + Relu / Clip(0, 6) -> one FusedGemm node (the pointwise conv with the epilogue);
    outputs equal the unfused graph's within the module's bound, and match ONNX Runtime and a
    float64 reference within float32 tolerance, at two batch sizes; a NaN reaches its row only."""
    m, inits = gemm_act_model(trans_b, c_shape, act, opset)
    out, fused = fused_alone(m, passes.fuse_gemm_activation, ["Flatten", "Gemm", act], "FusedGemm", "fc")
    w = out.initializers[fused.inputs[1]]
    np.testing.assert_array_equal(w, inits["B"] if trans_b else inits["B"].T)
    assert (fused.inputs[1] == "B") == trans_b           # transB=1: B itself, no copy
    if c_shape is None:
        assert len(fused.inputs) == 2
    else:
        np.testing.assert_array_equal(out.initializers[fused.inputs[2]], np.broadcast_to(inits["C"].reshape(-1), (5,)))
    assert passes.fuse_gemm_activation(out) is out
    sess = po.InferenceSession(m, backend=host_backend)
    plain_sess = po.InferenceSession(m, backend=host_backend, optimize=False)
    assert ops_of(sess.graph) == ["Flatten", "FusedGemm"] and "fuse_gemm_activation" in sess.applied_passes
    variant = "numpy" if host_backend == "numpy" else "conv_gemm_warptile"
    assert sess.graph.nodes[1].kernel == f"conv2d:{variant}+{fused.attrs['activation']}"
    for n in (4, 1):
        x = rand(n, 2, 3, seed=66 + n) * 4
        opt, plain = sess.run(None, {"x": x}), plain_sess.run(None, {"x": x})
        ref = gemm_ref(x, inits, trans_b, c_shape, act)
        assert (ref == 0).any() and (act == "Relu" or (ref == 6).any() or n == 1)
        assert_same_within_bound(plain, opt, [ref])
        np.testing.assert_allclose(opt[0], ort_run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)
    x = rand(4, 2, 3, seed=67)
    x[2, 1, 1] = np.nan
    got = sess.run(None, {"x": x})[0]
    assert np.isnan(got[2]).all() and not np.isnan(got[[0, 1, 3]]).any()


def test_gemm_activation_preconditions(host_backend):
    """Not fused (the pass returns the very graph; the session runs Gemm and the activation as they
    are): the Gemm output read twice; alpha != 1; beta != 1 with C; C per row (N, 1) or full (M, N);
    B a runtime input; Clip(0, 5); and a float64 Gemm."""
    cases = [dict(extra_reader=True), dict(alpha=0.5), dict(beta=2.0), dict(c_shape=(3, 1)), dict(c_shape=(3, 5)),
             dict(act="Clip5")]
    x = rand(3, 2, 3, seed=68)
    for kw in cases:
        clip5 = kw.pop("act", None) == "Clip5"
        m, inits = gemm_act_model(act="Clip" if clip5 else "Relu", **kw)
        if clip5:
            m.graph.initializer[-1].CopyFrom(helper.make_tensor("hi", 1, [], [5.0]))
        g = imported(m)
        assert passes.fuse_gemm_activation(g) is g, kw
        plain, opt, sess = both(m, {"x": x}, host_backend)
        assert "FusedGemm" not in ops_of(sess.graph) and "Gemm" in ops_of(sess.graph), kw
        for p, o in zip(plain, opt):
            np.testing.assert_array_equal(o, p)
    # B fed at run time, and float64 throughout
    b = rand(5, 6, seed=69)
    nodes = [mk("Gemm", ["a", "B"], ["h"], transB=1), mk("Relu", ["h"], ["y"])]
    for feeds, inits in (({"a": rand(3, 6), "B": b}, {}), ({"a": rand(3, 6).astype(np.float64)},
                                                           {"B": b.astype(np.float64)})):
        outs = {"y": (2, next(iter(feeds.values())).dtype)}
        g = imported(model(nodes, feeds, outs, inits))
        assert passes.fuse_gemm_activation(g) is g


# ---------------------------------------------------------------------------------------------
# fuse_add_activation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("act, opset", [("Relu", 13), ("Clip", 13), ("Clip", 10)])
def test_fuse_residual_add_activation(host_backend, act, opset):
    """Conv, then Add of the block input (the residual), then Relu / Clip(0, 6): the Add and the
    activation become one FusedAdd (the Conv's own output has the Add as its sole reader, so the
    Conv stays a plain Conv); outputs bit for bit the unfused graph's, within float32 tolerance of
    ONNX Runtime and of a float64 reference; NaN in x stays NaN."""
    inits = {"w": rand(3, 3, 3, 3, seed=74) * 0.5, "b": rand(3, seed=75)}
    nodes = [mk("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], name="conv"),
             mk("Add", ["c", "x"], ["s"], name="res")]
    nodes.append(activation_node("s", "y", act, opset, inits))
    m = model(nodes, {"x": rand(2, 3, 5, 6)}, {"y": 4}, inits, opset=opset, input_shapes={"x": ["N", 3, 5, 6]})
    out, fused = fused_alone(m, passes.fuse_add_activation, ["Conv", "Add", act], "FusedAdd", "res")
    assert fused.inputs == ["c", "x"]
    assert passes.fuse_add_activation(out) is out
    assert passes.fuse_conv_activation(out) is out      # the Conv's reader is the FusedAdd: no epilogue
    for n in (2, 3):
        x = rand(n, 3, 5, 6, seed=76 + n) * 4
        x[-1, 0, 0, 0] = np.nan
        plain, opt, sess = both(m, {"x": x}, host_backend)
        assert ops_of(sess.graph) == ["Conv", "FusedAdd"]
        variant = "numpy" if host_backend == "numpy" else "add"
        assert sess.graph.nodes[1].kernel == f"add:{variant}+{fused.attrs['activation']}"
        np.testing.assert_array_equal(opt[0], plain[0])
        assert np.isnan(opt[0][-1]).any() and not np.isnan(opt[0][:-1]).any()
        with np.errstate(invalid="ignore"):
            s = conv_ref(x, inits["w"], inits["b"], (1, 1), (1, 1, 1, 1), (1, 1), 1) + x
            ref = np.maximum(s, 0) if act == "Relu" else np.clip(s, 0, 6)
        assert (ref == 0).any() and (act == "Relu" or (ref == 6).any())
        np.testing.assert_allclose(opt[0], ref, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(opt[0], ort_run(m, {"x": x})[0], rtol=1e-5, atol=1e-5)


def test_add_activation_preconditions(host_backend):
    """Not fused: the Add output read twice (by the Relu and a Sigmoid), the Add output a graph
    output, Clip(0, 5) after the Add, and a Sub + Relu (only Add fuses)."""
    x = rand(2, 3, seed=77) * 4
    u = {"u": rand(2, 3, seed=78)}
    five = {"lo": np.array(0, np.float32), "hi": np.array(5, np.float32)}
    cases = [
        ([mk("Add", ["x", "u"], ["s"]), mk("Relu", ["s"], ["y"]), mk("Sigmoid", ["s"], ["z"])], {"y": 2, "z": 2}, u),
        ([mk("Add", ["x", "u"], ["s"]), mk("Relu", ["s"], ["y"])], {"y": 2, "s": 2}, u),
        ([mk("Add", ["x", "u"], ["s"]), mk("Clip", ["s", "lo", "hi"], ["y"])], {"y": 2}, {**u, **five}),
        ([mk("Sub", ["x", "u"], ["s"]), mk("Relu", ["s"], ["y"])], {"y": 2}, u),
    ]
    for nodes, outs, inits in cases:
        m = model(nodes, {"x": x}, outs, inits)
        g = imported(m)
        assert passes.fuse_add_activation(g) is g, ops_of(g)
        plain, opt, sess = both(m, {"x": x}, host_backend)
        assert "FusedAdd" not in ops_of(sess.graph) and sess.applied_passes == []
        for p, o in zip(plain, opt):
            np.testing.assert_array_equal(o, p)


# ---------------------------------------------------------------------------------------------
# eliminate_dead_nodes
# ---------------------------------------------------------------------------------------------
def test_eliminate_dead_nodes_alone():
    nodes = [mk("Relu", ["x"], ["y"], name="live"), mk("Sigmoid", ["x"], ["d1"], name="dead1"),
             mk("Mul", ["d1", "u"], ["d2"], name="dead2"), mk("Shape", ["x"], ["d3"], name="dead3")]
    m = model(nodes, {"x": rand(2, 3)}, {"y": 2}, {"u": rand(2, 3, seed=71), "unused": rand(4, seed=72)},
              input_shapes={"x": ["N", 3]})   # Shape(x) is N-dependent: nothing to fold, only to drop
    g = imported(m)
    out = passes.eliminate_dead_nodes(g)
    assert [n.name for n in out.nodes] == ["live"] and out.initializers == {}
    assert len(g.nodes) == 4 and set(g.initializers) == {"u", "unused"}
    assert "d2" not in out.tensors and "y" in out.tensors
    assert passes.eliminate_dead_nodes(out) is out
    x = rand(2, 3, seed=73)
    plain, opt, sess = both(m, {"x": x}, "numpy")
    np.testing.assert_array_equal(opt[0], np.maximum(x, 0))
    assert sess.applied_passes == ["eliminate_dead_nodes"]
    with pytest.raises(ValueError, match="'unused', which is an initializer"):
        sess.run(None, {"x": x, "unused": rand(4)})


# ---------------------------------------------------------------------------------------------
# The fixed list
# ---------------------------------------------------------------------------------------------
def test_no_pass_applies_graph_identical(host_backend):
    m = model([mk("MatMul", ["a", "b"], ["p"]), mk("Add", ["p", "c"], ["q"]), mk("Sigmoid", ["q"], ["y"])],
              {"a": rand(3, 4)}, {"y": 2}, {"b": rand(4, 5, seed=81), "c": rand(5, seed=82)},
              input_shapes={"a": ["N", 4]})
    g = imported(m)
    before = snapshot(g)
    for p in passes.PASSES:
        assert p.rewrite(g) is g, p.name
    assert passes.optimize(g) == (g, []) and snapshot(g) == before
    plain, opt, sess = both(m, {"a": rand(3, 4, seed=83)}, host_backend)
    np.testing.assert_array_equal(opt[0], plain[0])
    assert snapshot(sess.graph) == before


def resnet_block():
    """conv-BN-ReLU, conv-BN, residual Add, ReLU, global pooling, Gemm, Softmax; the channel count
    (for the Flatten target) comes from a shape subgraph, as exporters write it."""
    c = 4
    inits = {"w1": rand(c, c, 3, 3, seed=91) * 0.3, "w2": rand(c, c, 3, 3, seed=92) * 0.3,
             "fc": rand(3, c, seed=93), "fcb": rand(3, seed=94), "i1": np.array([1], np.int64),
             "i0": np.array([0], np.int64)}
    for k, v in bn_params(c, 95).items():
        inits[k + "1"] = v
    for k, v in bn_params(c, 96).items():
        inits[k + "2"] = v

    def bn_k(x, y, k):
        return mk("BatchNormalization", [x, f"s{k}", f"bb{k}", f"mu{k}", f"var{k}"], [y], name=f"bn{k}")
    nodes = [mk("Conv", ["x", "w1"], ["c1"], pads=[1, 1, 1, 1], name="conv1"), bn_k("c1", "n1", 1),
             mk("Relu", ["n1"], ["r1"], name="relu1"),
             mk("Conv", ["r1", "w2"], ["c2"], pads=[1, 1, 1, 1], name="conv2"), bn_k("c2", "n2", 2),
             mk("Add", ["n2", "x"], ["s"], name="residual"), mk("Relu", ["s"], ["r2"], name="relu2"),
             mk("GlobalAveragePool", ["r2"], ["p"], name="pool"),
             mk("Shape", ["p"], ["ps"]), mk("Gather", ["ps", "i0"], ["pn"], axis=0),
             mk("Gather", ["ps", "i1"], ["pc"], axis=0), mk("Concat", ["pn", "pc"], ["fs"], axis=0),
             mk("Reshape", ["p", "fs"], ["f"], name="flat"),
             mk("Gemm", ["f", "fc", "fcb"], ["l"], transB=1, name="fc"), mk("Softmax", ["l"], ["y"], axis=1)]
    return model(nodes, {"x": rand(2, c, 5, 5)}, {"y": 2}, inits, input_shapes={"x": ["N", c, 5, 5]})


def test_resnet_block_all_passes(host_backend):
    m = resnet_block()
    x = rand(2, 4, 5, 5, seed=97)
    plain, opt, sess = both(m, {"x": x}, host_backend)
    assert sess.applied_passes == ["fold_constants", "fold_batch_norm", "fuse_conv_activation", "fuse_add_activation",
                                   "eliminate_dead_nodes"]
    assert ops_of(sess.graph) == ["FusedConv", "Conv", "FusedAdd", "GlobalAveragePool", "Shape", "Gather",
                                  "Concat", "Reshape", "Gemm", "Softmax"]
    plain_sess = po.InferenceSession(m, backend=host_backend, optimize=False)
    assert len(plain_sess.graph.nodes) == 15 and "BatchNormalization" in ops_of(plain_sess.graph)
    assert_same_within_bound(plain, opt)
    x1 = rand(1, 4, 5, 5, seed=98)     # another batch size, same session
    np.testing.assert_allclose(sess.run(None, {"x": x1})[0], plain_sess.run(None, {"x": x1})[0],
                               rtol=0, atol=8 * EPS32)


def test_optimize_false_runs_as_imported():
    m, _ = conv_bn_model(relu=True)
    sess = po.InferenceSession(m, backend="numpy", optimize=False)
    assert ops_of(sess.graph) == ["Conv", "BatchNormalization", "Relu"] and sess.applied_passes == []
    opt = po.InferenceSession(m, backend="numpy")
    assert ops_of(opt.graph) == ["FusedConv"] and opt.graph.nodes[0].kernel == "conv2d:numpy+relu"
    assert opt.applied_passes == ["fold_batch_norm", "fuse_conv_activation", "eliminate_dead_nodes"]


def test_unsupported_refused_under_its_own_name():
    """A Conv the package cannot run is refused as the Conv it is, before a pass renames it."""
    m = model([mk("Conv", ["x", "w"], ["c"], name="conv"),
               mk("Relu", ["c"], ["y"])], {"x": rand(1, 1, 4, 4, 4)}, {"y": 5}, {"w": rand(1, 1, 2, 2, 2)})
    with pytest.raises(NotImplementedError, match=r"Conv node 'conv' \(opset 13\): .*input rank 5 not supported"):
        po.InferenceSession(m, backend="numpy")
