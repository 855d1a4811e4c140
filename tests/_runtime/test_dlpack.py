"""GPU tensors that expose only DLPack (``__dlpack__`` / ``__dlpack_device__``, no
``__cuda_array_interface__``, like JAX arrays) run on the cuda backend, on the GPU that holds
them: every path that turns a user's array into a CuPy array goes through ``cupy.from_dlpack``
for them. The fake CuPy's ``asarray`` refuses such objects, as CuPy's does."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po


@pytest.fixture
def cupy(fake_cupy):
    return fake_cupy


@pytest.fixture
def dl():
    import fake_cupy

    return fake_cupy.DLPackOnly


def _data(cupy, gpu):
    rng = np.random.default_rng(0)
    host = {
        "x": rng.standard_normal((2, 3, 6, 6)).astype(np.float32),
        "w": rng.standard_normal((4, 3, 3, 3)).astype(np.float32),
        "bias": rng.standard_normal(4).astype(np.float32),
        "a": rng.standard_normal((5, 7)).astype(np.float32),
        "b": rng.standard_normal((7, 4)).astype(np.float32),
        "a8": rng.integers(-5, 5, (8, 4)).astype(np.int8),
        "b8": rng.integers(-5, 5, (4, 3)).astype(np.int8),
        "q": rng.integers(-100, 100, (2, 3, 6, 6)).astype(np.int8),
        "scale": np.array([0.05, 0.1, 0.02], np.float32),      # per channel, on the GPU
        "zp": np.array([3, -2, 0], np.int8),
        "w8": rng.integers(-5, 5, (4, 3, 3, 3)).astype(np.int8),
    }
    with cupy.cuda.Device(gpu):
        return {k: cupy.asarray(v) for k, v in host.items()}


CALLS = {
    "gemm": lambda t: po.gemm(t["a"], t["b"]),
    "gemm_trans": lambda t: po.gemm(t["b"], t["a"], trans_a=True, trans_b=True),
    "matmul": lambda t: po.matmul(t["a"], t["b"]),
    "relu": lambda t: po.relu(t["x"]),
    "leaky_relu": lambda t: po.leaky_relu(t["x"], 0.2),
    "softmax": lambda t: po.softmax(t["x"]),
    "log_softmax": lambda t: po.log_softmax(t["x"]),
    "max_pool2d": lambda t: po.max_pool2d(t["x"], 2),
    "avg_pool2d": lambda t: po.avg_pool2d(t["x"], 2),
    "global_avg_pool2d": lambda t: po.global_avg_pool2d(t["x"]),
    "conv2d": lambda t: po.conv2d(t["x"], t["w"], t["bias"], padding=1),
    "im2col": lambda t: po.im2col(t["x"], 2),
    "nchw_to_nhwc": lambda t: po.nchw_to_nhwc(t["x"]),
    "quantize": lambda t: po.quantize(t["x"], 0.05),
    "dequantize": lambda t: po.dequantize(t["q"], 0.05),
    "int8_gemm": lambda t: po.int8_gemm(t["a8"], t["b8"]),
    "quantize_gpu_params": lambda t: po.quantize(t["x"], t["scale"], t["zp"], axis=1),
    "dequantize_gpu_params": lambda t: po.dequantize(t["q"], t["scale"], t["zp"], axis=1),
    "qconv2d": lambda t: po.qconv2d(t["q"], 0.05, 0, t["w8"], 0.02, 0, 0.1, 0, padding=1),
}


@pytest.mark.parametrize("op", sorted(CALLS))
def test_dlpack_only_tensors_run_on_their_gpu(cupy, dl, op):
    arrays = _data(cupy, 1)
    want = CALLS[op](arrays)  # the same call on CuPy arrays
    wrapped = {k: dl(v) for k, v in arrays.items()}
    assert not hasattr(wrapped["x"], "__cuda_array_interface__")
    cupy._state["calls"].clear()
    cupy._state["entered"].clear()
    got = CALLS[op](wrapped)
    assert "from_dlpack" in cupy._state["calls"]
    assert cupy._state["entered"] == [1] and cupy._state["device"] == 0
    assert type(got) is cupy.ndarray and got.device.id == 1
    np.testing.assert_array_equal(got.get(), want.get())


def test_dlpack_gemm_against_numpy(cupy, dl):
    t = _data(cupy, 0)
    got = po.gemm(dl(t["b"]), dl(t["a"]), trans_a=True, trans_b=True, alpha=2.0)
    want = 2.0 * t["b"].get().astype(np.float64).T @ t["a"].get().astype(np.float64).T
    np.testing.assert_allclose(got.get(), want, rtol=1e-5, atol=1e-5)


def test_dlpack_conv_with_no_input_channels_is_the_bias(cupy, dl):
    x = cupy.asarray(np.ones((1, 0, 4, 4), np.float32))
    w = cupy.asarray(np.ones((3, 0, 2, 2), np.float32))
    bias = cupy.asarray(np.array([1.5, -2.0, 0.25], np.float32))
    got = po.conv2d(dl(x), dl(w), dl(bias))
    np.testing.assert_array_equal(got.get(), np.broadcast_to(bias.get().reshape(1, 3, 1, 1), (1, 3, 3, 3)))


def test_dlpack_and_cupy_arrays_on_two_gpus_are_an_error(cupy, dl):
    a = cupy.asarray(np.ones((5, 3), np.float32))
    with cupy.cuda.Device(1):
        b = cupy.asarray(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"different devices \('a' on GPU 0, 'b' on GPU 1\)"):
        po.gemm(a, dl(b))
    with pytest.raises(ValueError, match=r"different devices \('a' on GPU 1, 'b' on GPU 0\)"):
        po.matmul(dl(b), cupy.asarray(np.ones((4, 2), np.float32)))
