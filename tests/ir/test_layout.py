"""The NHWC layout pass (pygpu_ops/ir/layout.py) alone and through InferenceSession(layout="NHWC"):
the same outputs as the NCHW session and ONNX Runtime on numpy and the emulator, Transposes only at
the edges of the CNN (counted), the NHWC kernels named in each node's ``kernel``, and the nodes the
pass cannot place left NCHW behind a transpose (never a wrong result)."""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import helper, model, ort_run, rand
from .test_digits_onnx import EXAMPLES
from .test_models import mobilenet_block_model, resnet_block_model

import pygpu_ops as po
from pygpu_ops.ir import layout as lay
from pygpu_ops.ir.onnx_import import to_graph

mk = helper.make_node


def _same(m, feed, backend, n_transposes):
    """NHWC session vs the NCHW one and ONNX Runtime; the NHWC graph has ``n_transposes`` Transposes."""
    nhwc = po.InferenceSession(m.SerializeToString(), backend=backend, layout="NHWC")
    nchw = po.InferenceSession(m.SerializeToString(), backend=backend)
    got, ref, want = nhwc.run(None, feed), nchw.run(None, feed), ort_run(m, feed)
    for g, r, w in zip(got, ref, want):
        assert g.shape == w.shape and g.dtype == w.dtype
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale)
        np.testing.assert_allclose(g, r, rtol=1e-5, atol=1e-6 * scale)
    assert lay.transposes(nhwc.graph) == n_transposes, str(nhwc.graph)
    assert lay.transposes(nchw.graph) == 0
    assert "to_nhwc" in nhwc.applied_passes
    return nhwc


def _nhwc_nodes(sess):
    return [n for n in sess.graph.nodes if n.attr("layout") == "NHWC" and n.op_type != "Transpose"]


@pytest.mark.parametrize("build", [resnet_block_model, mobilenet_block_model], ids=["resnet", "mobilenet"])
def test_cnn_blocks(host_backend, build):
    """Input -> transpose in; GlobalAveragePool -> transpose out before Flatten: two Transposes."""
    m = build()
    x = rand(2, 3, 32, 32, seed=4)
    sess = _same(m, {"x": x}, host_backend, 2)
    first, = [n for n in sess.graph.nodes if n.op_type == "Transpose" and n.attr("perm") == [0, 2, 3, 1]]
    assert first.inputs == ["x"]
    back, = [n for n in sess.graph.nodes if n.op_type == "Transpose" and n.attr("perm") == [0, 3, 1, 2]]
    assert sess.graph.consumers(back.outputs[0])[0].op_type == "Flatten"
    placed = _nhwc_nodes(sess)
    assert "GlobalAveragePool" in {n.op_type for n in placed}
    assert {n.op_type for n in placed} & {"Add", "FusedAdd"}     # the residual adds (FusedAdd + Relu)
    assert not any(n.op_type in ("Flatten", "Gemm", "Softmax") for n in placed)
    for n in sess.graph.nodes:
        if n.op_type in ("Conv", "FusedConv", "MaxPool", "GlobalAveragePool", "Add", "FusedAdd", "Relu", "Clip"):
            assert n.attr("layout") == "NHWC", n.name
            assert sess.graph.tensors[n.outputs[0]].layout == "NHWC"
    if host_backend == "emulator":
        kernels = {n.op_type: n.kernel for n in sess.graph.nodes}
        assert any(n.kernel.startswith("conv2d:im2col_nhwc+conv_gemm_warptile") for n in placed)
        assert kernels["GlobalAveragePool"] == "global_avg_pool2d:global_avg_pool2d_nhwc"
        if "MaxPool" in kernels:
            assert kernels["MaxPool"] == "max_pool2d:max_pool2d_nhwc"


def test_digits(host_backend):
    """The digits CNN: Conv, Relu, MaxPool twice, then Flatten and Gemm (NCHW flattening order)."""
    import onnx

    m = onnx.load(str(EXAMPLES / "digits_cnn.onnx"))
    x = np.random.default_rng(3).random((4, 1, 8, 8), dtype=np.float32)
    sess = _same(m, {"x": x}, host_backend, 2)
    if host_backend == "emulator":
        assert [n.kernel for n in sess.graph.nodes if n.op_type == "MaxPool"] == ["max_pool2d:max_pool2d_nhwc"] * 2


def test_dynamic_batch():
    m = resnet_block_model()
    sess = po.InferenceSession(m.SerializeToString(), backend="numpy", layout="NHWC")
    for n in (1, 3):
        x = rand(n, 3, 32, 32, seed=n)
        for g, w in zip(sess.run(None, {"x": x}), ort_run(m, {"x": x})):
            np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5)


def _edge_model():
    """Two inputs; a residual Add with a per-channel (C, 1, 1) constant, a Mul by a scalar, a Concat
    on channels, an AveragePool with asymmetric pads, a Softmax over channels mid-graph (NCHW only)
    whose output feeds another Conv, and a 4-D graph output taken from inside the CNN."""
    nodes = [
        mk("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="c1"),
        mk("Add", ["a", "cb"], ["a2"], name="addc"),            # (4, 1, 1) initializer
        mk("Mul", ["a2", "half"], ["a3"], name="mulh"),         # scalar initializer
        mk("Relu", ["y"], ["yr"], name="ry"),                   # y enters NCHW: Relu stays NCHW
        mk("Concat", ["a3", "a"], ["cat"], axis=1, name="cat"),
        mk("AveragePool", ["cat"], ["p"], kernel_shape=[3, 3], strides=[2, 2], pads=[0, 1, 1, 0],
           count_include_pad=1, ceil_mode=1, name="pool"),
        mk("Softmax", ["p"], ["s"], axis=1, name="sm"),         # opset 13: over the channels
        mk("Conv", ["s", "w2"], ["c2"], name="c2"),
        mk("Add", ["c2", "yr"], ["z"], name="addy"),            # y (NCHW) transposed in
    ]
    inits = {"w1": rand(4, 2, 3, 3, seed=1), "cb": rand(4, 1, 1, seed=2),
             "half": np.array(0.5, np.float32), "w2": rand(3, 8, 1, 1, seed=3)}
    feed = {"x": rand(2, 2, 7, 6, seed=5), "y": rand(2, 3, 4, 3, seed=6)}
    return model(nodes, feed, {"z": 4, "a": 4}, inits), feed


def test_edges_and_fallbacks(host_backend):
    m, feed = _edge_model()
    # In: x, s (after the NCHW Softmax), yr. Out: p before the Softmax, z and a as graph outputs.
    sess = _same(m, feed, host_backend, 6)
    by = {n.name: n for n in sess.graph.nodes}
    assert by["sm"].attr("layout") is None and by["ry"].attr("layout") is None
    assert by["cat"].attr("axis") == 3 and by["cat"].attr("layout") == "NHWC"
    assert sess.graph.initializers[by["addc"].inputs[1]].shape == (1, 1, 1, 4)
    assert by["mulh"].inputs[1] == "half"          # a scalar is used as it is
    assert by["addy"].attr("layout") == "NHWC"


def test_pass_alone():
    """to_nhwc on the imported graph: a new graph, the input untouched; weights transposed once to
    (O, kh, kw, C/g) as new initializers; identity where there is no convolution."""
    m = resnet_block_model()
    g = to_graph(m)
    before = [(n.op_type, list(n.inputs), dict(n.attrs)) for n in g.nodes]
    new = lay.to_nhwc(g)
    assert new is not g and [(n.op_type, list(n.inputs), dict(n.attrs)) for n in g.nodes] == before
    conv = next(n for n in new.nodes if n.op_type == "Conv")
    w_old = g.initializers[next(n for n in g.nodes if n.name == conv.name).inputs[1]]
    np.testing.assert_array_equal(new.initializers[conv.inputs[1]], w_old.transpose(0, 2, 3, 1))
    assert lay.transposes(new) == 2
    plain = to_graph(model([mk("Relu", ["x"], ["y"])], {"x": rand(1, 2, 3, 3)}, {"y": 4}))
    assert lay.to_nhwc(plain) is plain


def test_shared_weight_and_runtime_weight(host_backend):
    """A weight read by two Convs is transposed per reader without touching the original; a Conv
    whose weight is a graph input cannot be placed and stays NCHW."""
    nodes = [mk("Conv", ["x", "w"], ["a"], pads=[1, 1, 1, 1]), mk("Conv", ["a", "w"], ["b"], pads=[1, 1, 1, 1]),
             mk("Conv", ["b", "wr"], ["y"])]
    feed = {"x": rand(1, 3, 5, 5, seed=1), "wr": rand(2, 3, 1, 1, seed=2)}
    m = model(nodes, feed, {"y": 4}, {"w": rand(3, 3, 3, 3, seed=3)})
    sess = _same(m, feed, host_backend, 2)
    assert [n.attr("layout") for n in sess.graph.nodes if n.op_type == "Conv"] == ["NHWC", "NHWC", None]


def test_layout_argument():
    m = resnet_block_model()
    with pytest.raises(ValueError, match="layout must be 'NCHW' or 'NHWC'; got 'nhwc'"):
        po.InferenceSession(m.SerializeToString(), backend="numpy", layout="nhwc")
    sess = po.InferenceSession(m.SerializeToString(), backend="numpy", layout="NHWC", optimize=False)
    assert sess.applied_passes == ["to_nhwc"] and lay.transposes(sess.graph) == 2


def test_run_command_layout(capsys, tmp_path):
    from pygpu_ops import cli

    path = tmp_path / "resnet.onnx"
    path.write_bytes(resnet_block_model().SerializeToString())
    rc = cli.main(["run", str(path), "--backend", "numpy", "--layout", "NHWC", "--compare-ort"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "logits: max abs" in out and "ok" in out
