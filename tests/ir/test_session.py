"""InferenceSession: symbolic batch, introspection, the plan, and every error the API names."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import check, helper, model, numpy_helper, ort_run, rand

import pygpu_ops as po

mk = helper.make_node
ROOT = Path(__file__).resolve().parents[2]


def small_cnn(opset=13):
    """Conv -> Relu -> MaxPool -> Flatten -> Gemm -> Softmax on x (N, 2, 6, 6)."""
    inits = {"w": rand(4, 2, 3, 3, seed=1), "b": rand(4, seed=2), "g": rand(5, 36, seed=3), "c": rand(5, seed=4)}
    nodes = [mk("Conv", ["x", "w", "b"], ["c1"], pads=[1, 1, 1, 1], name="conv"), mk("Relu", ["c1"], ["r1"], name="relu"),
             mk("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool"),
             mk("Flatten", ["p1"], ["f"], name="flat"), mk("Gemm", ["f", "g", "c"], ["l"], transB=1, name="fc"),
             mk("Softmax", ["l"], ["y"], axis=1, name="softmax")]
    return model(nodes, {"x": rand(1, 2, 6, 6)}, {"y": 2}, inits, opset=opset,
                 input_shapes={"x": ["N", 2, 6, 6]})


def test_symbolic_batch_one_session(host_backend):
    m = small_cnn()
    sess, _ = check(m, {"x": rand(1, 2, 6, 6, seed=7)}, host_backend)
    x3 = rand(3, 2, 6, 6, seed=8)
    y3 = sess.run(None, {"x": x3})[0]
    np.testing.assert_allclose(y3, ort_run(m, {"x": x3})[0], rtol=1e-4, atol=1e-5)
    assert y3.shape == (3, 5)
    y1 = sess.run(["y"], {"x": x3[1:2]})[0]
    np.testing.assert_allclose(y1[0], y3[1], rtol=1e-5, atol=1e-6)
    assert len(sess._plans) == 2    # one plan per input signature, reused


def test_graph_and_introspection():
    sess = po.InferenceSession(small_cnn(), backend="numpy")
    # session.graph is the optimized IR: Conv + Relu run as one FusedConv (tests/ir/test_passes.py)
    assert [n.op_type for n in sess.graph.nodes] == ["FusedConv", "MaxPool", "Flatten", "Gemm", "Softmax"]
    kernels = {n.op_type: n.kernel for n in sess.graph.nodes}
    assert kernels["FusedConv"] == "conv2d:numpy+relu" and kernels["Flatten"] == "view:flatten"
    assert sess.graph.tensors["f"].shape == ("N", 36)
    assert sess.graph.producer("r1").name == "conv" and [n.name for n in sess.graph.consumers("r1")] == ["pool"]
    table = str(sess.graph)
    assert "FusedConv" in table and "(N, 4, 6, 6)" in table and "conv2d:numpy+relu" in table
    (i,), (o,) = sess.get_inputs(), sess.get_outputs()
    assert (i.name, i.shape, i.type) == ("x", ["N", 2, 6, 6], "tensor(float)")
    assert (o.name, o.shape, o.type) == ("y", ["N", 5], "tensor(float)")
    assert sess.optimize is True


def test_device_kernel_labels():
    """Kernel labels on the device backends; creating the session runs no kernel."""
    sess = po.InferenceSession(small_cnn(), backend="emulator")
    kernels = {n.op_type: n.kernel for n in sess.graph.nodes}
    assert kernels["FusedConv"] == "conv2d:conv_gemm_warptile+relu"
    assert kernels["Gemm"] == f"gemm:{po.sgemm_variants()[-1]}"
    assert kernels["MaxPool"] == "max_pool2d:max_pool2d_nchw"


def test_plan_liveness_and_peak():
    sess = po.InferenceSession(small_cnn(), backend="numpy", optimize=False)   # Conv and Relu apart
    plan = sess.plan({"x": (2, 2, 6, 6)})
    assert [s.op_type for s in plan.steps] == ["Conv", "Relu", "MaxPool", "Flatten", "Gemm", "Softmax"]
    frees = {s.op_type: s.frees for s in plan.steps}
    assert frees["Relu"] == ["c1"] and frees["MaxPool"] == ["r1"] and frees["Softmax"] == ["l"]
    assert frees["Gemm"] == ["f"]      # the Flatten view and its source go together
    # Peak: conv output and relu output live together: 2 * (2*4*6*6) floats.
    assert plan.peak_bytes == 2 * 2 * 4 * 6 * 6 * 4
    assert "peak 2304 bytes" in str(plan)
    assert sess.plan({"x": (2, 2, 6, 6)}) is plan


def test_file_path_and_bytes(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(small_cnn().SerializeToString())
    x = rand(2, 2, 6, 6)
    a = po.InferenceSession(str(path), backend="numpy").run(None, {"x": x})[0]
    b = po.InferenceSession(path.read_bytes(), backend="numpy").run(None, {"x": x})[0]
    np.testing.assert_array_equal(a, b)


# ---------------------------------------------------------------------------------------------
# Errors
# ---------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sess():
    return po.InferenceSession(small_cnn(), backend="numpy")


@pytest.mark.parametrize("feed, exc, match", [
    ({}, ValueError, "input 'x' is missing"),
    ({"x": rand(1, 2, 6, 6), "z": rand(1)}, ValueError, "'z', which is not an input"),
    ({"x": rand(1, 2, 6, 6), "w": rand(1)}, ValueError, "'w', which is an initializer"),
    ({"x": rand(1, 2, 6, 6).astype(np.float64)}, TypeError, r"input 'x' has dtype float64 \(tensor\(double\)\); expected float32"),
    ({"x": rand(1, 2, 6, 5)}, ValueError, "input 'x' has shape .*dimension 3 must be 6"),
    ({"x": rand(2, 6, 6)}, ValueError, "input 'x' has shape .*expected rank 4"),
    ({"x": [[1.0]]}, TypeError, r"input_feed\['x'\]"),
    ([("x", rand(1, 2, 6, 6))], TypeError, "input_feed must be a dict"),
])
def test_feed_errors(sess, feed, exc, match):
    with pytest.raises(exc, match=match):
        sess.run(None, feed)


def test_output_name_errors(sess):
    with pytest.raises(ValueError, match="'nope' is not an output"):
        sess.run(["nope"], {"x": rand(1, 2, 6, 6)})
    with pytest.raises(TypeError, match="output_names"):
        sess.run("y", {"x": rand(1, 2, 6, 6)})


def test_symbolic_dim_consistency():
    m = model([mk("MatMul", ["a", "b"], ["y"])], {"a": rand(2, 3), "b": rand(3, 2)}, {"y": 2},
              input_shapes={"a": ["N", 3], "b": [3, "N"]})
    s = po.InferenceSession(m, backend="numpy")
    with pytest.raises(ValueError, match="input 'b' has N = 4 .* input 'a' has N = 2"):
        s.run(None, {"a": rand(2, 3), "b": rand(3, 4)})


@pytest.mark.parametrize("data", [b"not a model", b"", b"\x08\x07"])
def test_bad_file_is_value_error(data, tmp_path):
    with pytest.raises(ValueError, match="model"):
        po.InferenceSession(data, backend="numpy")
    path = tmp_path / "bad.onnx"
    path.write_bytes(data)
    with pytest.raises(ValueError, match="model"):
        po.InferenceSession(str(path), backend="numpy")


def test_bad_arguments():
    with pytest.raises(ValueError, match="backend"):
        po.InferenceSession(small_cnn(), backend="tpu")
    with pytest.raises(TypeError, match="model must be"):
        po.InferenceSession(12)
    with pytest.raises(ValueError, match="no such file"):
        po.InferenceSession("/nonexistent/model.onnx")


def test_unsupported_op_names_op_node_opset():
    m = model([mk("Resize", ["x", "", "sc"], ["y"], name="up")], {"x": rand(1, 1, 2, 2)}, {"y": 4},
              {"sc": np.array([1, 1, 2, 2], np.float32)}, opset=13)
    with pytest.raises(NotImplementedError, match=r"Resize node 'up' \(opset 13\): op not supported"):
        po.InferenceSession(m, backend="numpy")


@pytest.mark.parametrize("opset", [6, 22])
def test_unsupported_opset(opset):
    m = model([mk("Relu", ["x"], ["y"])], {"x": rand(2)}, {"y": 1}, opset=opset)
    with pytest.raises(NotImplementedError, match=f"opset {opset} of the default domain"):
        po.InferenceSession(m, backend="numpy")


def test_other_domain_refused():
    m = model([mk("Gelu", ["x"], ["y"], domain="com.microsoft", name="gelu")], {"x": rand(2)}, {"y": 1})
    m.opset_import.append(helper.make_opsetid("com.microsoft", 1))
    with pytest.raises(NotImplementedError, match="node 'gelu' \\(Gelu\\): domain 'com.microsoft'"):
        po.InferenceSession(m, backend="numpy")


def test_initializer_as_input_ir3_style():
    """Old exporters list initializers among the graph inputs: they stay constants."""
    m = small_cnn(opset=9)
    for name in ("w", "b", "g", "c"):
        arr = numpy_helper.to_array(next(t for t in m.graph.initializer if t.name == name))
        m.graph.input.append(helper.make_tensor_value_info(name, 1, list(arr.shape)))
    s = po.InferenceSession(m, backend="numpy")
    assert [i.name for i in s.get_inputs()] == ["x"]
    check(m, {"x": rand(2, 2, 6, 6)}, "numpy")


def test_import_is_lazy():
    """``import pygpu_ops`` imports neither onnx nor CuPy, nor the IR; the session loads on first use."""
    code = ("import sys, pygpu_ops; bad = [m for m in ('onnx', 'cupy', 'pygpu_ops.ir.session') if m in sys.modules]; "
            "assert not bad, bad; pygpu_ops.InferenceSession; assert 'pygpu_ops.ir.session' in sys.modules; "
            "assert 'onnx' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, check=True, timeout=120)
