"""Builds small ONNX models with onnx.helper and checks a session against ONNX Runtime CPU and a
NumPy float64 reference (written here, independent of the package's ops)."""
from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx", reason="the operator IR tests need the onnx package (pip install 'pygpu_ops[test]')")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import pygpu_ops as po  # noqa: E402

_ELEM = {np.dtype(np.float32): TensorProto.FLOAT, np.dtype(np.float64): TensorProto.DOUBLE,
         np.dtype(np.int64): TensorProto.INT64, np.dtype(np.bool_): TensorProto.BOOL}


def model(nodes, inputs, outputs, inits=None, opset=13, input_shapes=None):
    """``inputs``: name -> array (its dtype; shape from ``input_shapes`` or the array);
    ``outputs``: name -> rank, or name -> (rank, dtype) (dims left unnamed; float32 by default);
    ``inits``: name -> array."""
    ins = [helper.make_tensor_value_info(n, _ELEM[np.dtype(a.dtype)],
                                         list((input_shapes or {}).get(n, a.shape))) for n, a in inputs.items()]
    outs = []
    for n, spec in outputs.items():
        rank, dtype = spec if isinstance(spec, tuple) else (spec, np.float32)
        outs.append(helper.make_tensor_value_info(n, _ELEM[np.dtype(dtype)], [None] * rank))
    g = helper.make_graph(nodes, "test", ins, outs,
                          [numpy_helper.from_array(np.asarray(v), k) for k, v in (inits or {}).items()])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = min(m.ir_version, 8)   # onnxruntime releases lag the newest IR version
    return m


def ort_run(m, feed):
    ort = pytest.importorskip("onnxruntime", reason="comparing against ONNX Runtime needs onnxruntime")
    sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
    return sess.run(None, feed)


def check(m, feed, backend, ref=None, rtol=1e-4, atol=1e-5):
    """Run ``m`` on ``backend`` and compare every output with ONNX Runtime and, where given, with
    ``ref`` (float64 arrays): the float32 result must be within float32 tolerance of both."""
    sess = po.InferenceSession(m.SerializeToString(), backend=backend)
    got = [np.asarray(g) for g in sess.run(None, feed)]
    want = ort_run(m, feed)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g.shape == w.shape, f"output {i}: shape {g.shape}, ONNX Runtime {w.shape}"
        assert g.dtype == w.dtype, f"output {i}: dtype {g.dtype}, ONNX Runtime {w.dtype}"
        scale = max(1.0, float(np.abs(w).max())) if w.size else 1.0
        np.testing.assert_allclose(g, w, rtol=rtol, atol=atol * scale, err_msg=f"output {i} vs ONNX Runtime")
    if ref is not None:
        for i, (g, r) in enumerate(zip(got, ref if isinstance(ref, list) else [ref])):
            scale = max(1.0, float(np.abs(r).max())) if r.size else 1.0
            np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * scale, err_msg=f"output {i} vs float64 reference")
    return sess, got


def rand(*shape, seed=0):
    return np.random.default_rng(seed + sum(shape)).standard_normal(shape).astype(np.float32)


def has(*names):
    """skipif marker for handlers whose public op comes with the elementwise family."""
    missing = [n for n in names if not hasattr(po, n)]
    return pytest.mark.skipif(bool(missing), reason=f"pygpu_ops lacks {', '.join(missing)} in this build "
                                                    f"(the session refuses the op; see test_refuses_missing_elementwise)")


def conv_ref(x, w, b, stride, pads, dilation, group):
    """tests/test_conv.py's direct-loop float64 convolution; pads (top, left, bottom, right) as ONNX,
    any split: x is zero-padded here, then convolved without padding."""
    from test_conv import ref_conv2d_nchw

    t, l, b_, r = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (0, 0), (t, b_), (l, r)))
    return ref_conv2d_nchw(xp, w, b, stride, 0, dilation, group, relu=False)[0]
