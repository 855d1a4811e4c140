"""What a repeated op call costs in CuPy API calls, counted through the fake CuPy's call log.

The first call of a kernel on a device builds its module, looks the function up and reads its
attributes; from the second call on, an op call must reach CuPy only for what it cannot avoid:
entering the arrays' device, allocating the result and launching. Any module, function or
attribute call (cuModuleGetFunction, cuFuncGetAttribute in CuPy) on a repeated call fails here."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po
from pygpu_ops import activations
from pygpu_ops._runtime import device as device_mod
from pygpu_ops._runtime.device import Launch

MINIMAL = ["cuda.Device.__enter__", "empty", "launch"]
PER_KERNEL = ("RawModule", "RawModule.get_function", "Function.attributes",
              "Function.max_threads_per_block", "Function.max_dynamic_shared_size_bytes",
              "Function.max_dynamic_shared_size_bytes=", "runtime.deviceGetAttribute", "cuda.Device()")


@pytest.fixture
def cupy(fake_cupy):
    return fake_cupy


def _second_call(cupy, f):
    f()
    cupy._state["calls"].clear()
    y = f()
    return list(cupy._state["calls"]), y


def test_second_gemm_is_the_allocation_and_the_launch(cupy):
    a = cupy.asarray(np.arange(12, dtype=np.float32).reshape(4, 3))
    b = cupy.asarray(np.ones((3, 5), np.float32))
    calls, y = _second_call(cupy, lambda: po.gemm(a, b, variant="naive"))
    assert calls == MINIMAL
    np.testing.assert_array_equal(y.get(), np.arange(12, dtype=np.float64).reshape(4, 3) @ np.ones((3, 5)))


def test_first_call_reads_each_kernels_function_and_attributes_once(cupy):
    a = cupy.asarray(np.ones((4, 3), np.float32))
    b = cupy.asarray(np.ones((3, 5), np.float32))
    po.gemm(a, b, variant="naive")
    calls = cupy._state["calls"]
    assert calls.count("RawModule") == 1
    assert calls.count("RawModule.get_function") == 1
    assert calls.count("Function.attributes") == 1
    assert "Function.max_threads_per_block" not in calls  # read once, from the attributes
    assert calls[-1] == "launch"


@pytest.mark.parametrize("op", ["relu", "leaky_relu", "softmax", "max_pool2d", "avg_pool2d", "matmul", "im2col"])
def test_second_call_of_an_op_makes_no_module_function_or_attribute_call(cupy, op):
    x = cupy.asarray(np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32))
    calls = {
        "relu": lambda: po.relu(x),
        "leaky_relu": lambda: po.leaky_relu(x, 0.1),
        "softmax": lambda: po.softmax(x),
        "max_pool2d": lambda: po.max_pool2d(x, 2),
        "avg_pool2d": lambda: po.avg_pool2d(x, 2),
        "matmul": lambda: po.matmul(x, x),
        "im2col": lambda: po.im2col(x, 2),
    }
    got, _ = _second_call(cupy, calls[op])
    assert not [c for c in got if c in PER_KERNEL], got
    assert got.count("launch") >= 1


@pytest.mark.parametrize("op", ["relu", "leaky_relu"])
def test_second_elementwise_call_is_minimal(cupy, op):
    x = cupy.asarray(np.linspace(-1, 1, 37, dtype=np.float32))
    f = (lambda: po.relu(x)) if op == "relu" else (lambda: po.leaky_relu(x, 0.5))
    calls, y = _second_call(cupy, f)
    assert calls == MINIMAL  # a contiguous input is used as it is: no ascontiguousarray
    want = np.maximum(x.get(), 0) if op == "relu" else np.where(x.get() < 0, 0.5 * x.get(), x.get())
    np.testing.assert_array_equal(y.get(), want)


def test_functions_are_memoized_per_device(cupy):
    def run_on(gpu):
        with cupy.cuda.Device(gpu):
            a = cupy.asarray(np.ones((4, 3), np.float32))
        cupy._state["calls"].clear()
        po.relu(a)
        return list(cupy._state["calls"])

    first0 = run_on(0)
    assert first0.count("RawModule.get_function") == 1
    first1 = run_on(1)  # another GPU: its own module, function and attributes
    assert first1.count("RawModule.get_function") == 1 and first1.count("Function.attributes") == 1
    assert run_on(0) == MINIMAL and run_on(1) == MINIMAL


def test_dynamic_shared_memory_opt_in_is_set_once(cupy):
    dev = device_mod.get_device("cuda")
    x = cupy.asarray(np.linspace(-1, 1, 64, dtype=np.float32))
    out = cupy.empty((64,), np.float32)
    kernel = activations.RELU[np.dtype(np.float32)]
    big = Launch(grid=(1,), block=(64,), shared_mem=64 * 1024)  # above the 48 KiB default
    dev.launch(kernel, big, (x, out, np.int64(64)))
    first = list(cupy._state["calls"])
    assert first.count("Function.max_dynamic_shared_size_bytes=") == 1
    assert first.count("runtime.deviceGetAttribute") == 1
    cupy._state["calls"].clear()
    dev.launch(kernel, big, (x, out, np.int64(64)))
    dev.launch(kernel, Launch(grid=(1,), block=(64,), shared_mem=60 * 1024), (x, out, np.int64(64)))
    assert cupy._state["calls"] == ["cuda.Device()", "launch"] * 2  # outside an op: the current device is asked
    np.testing.assert_array_equal(out.get(), np.maximum(x.get(), 0))


def test_threads_limit_comes_from_the_memoized_attributes(cupy):
    dev = device_mod.get_device("cuda")
    x = cupy.asarray(np.ones(8, np.float32))
    kernel = activations.RELU[np.dtype(np.float32)]
    dev.launch(kernel, Launch(grid=(1,), block=(32,)), (x, x, np.int64(8)))
    cupy._state["calls"].clear()
    with pytest.raises(ValueError, match="2048 threads, more than the kernel's limit of 1024"):
        dev.launch(kernel, Launch(grid=(1,), block=(2048,)), (x, x, np.int64(8)))
    assert cupy._state["calls"] == ["cuda.Device()"]


# INT8 ops take small parameter arrays (zero points, scales, requantize multipliers): from the
# second call on they come from Device.constant, so the call copies nothing to the GPU (a host-
# to-device copy is synchronous and is refused inside a CUDA graph capture) and asks no device
# property again.
HOST_TO_DEVICE = ("asarray", "ascontiguousarray", "runtime.getDeviceProperties", "cuda.Device()")


@pytest.mark.parametrize("op", ["int8_gemm", "int8_gemm_zp", "qlinear_matmul", "quantize", "dequantize", "qconv2d"])
def test_second_int8_call_copies_nothing_to_the_device(cupy, op):
    rng = np.random.default_rng(1)
    a = cupy.asarray(rng.integers(-9, 9, (6, 8)).astype(np.int8))
    b = cupy.asarray(rng.integers(-9, 9, (8, 5)).astype(np.int8))
    x = cupy.asarray(rng.standard_normal((2, 3, 5, 5)).astype(np.float32))
    q = cupy.asarray(rng.integers(-9, 9, (1, 3, 5, 5)).astype(np.int8))
    w = cupy.asarray(rng.integers(-9, 9, (4, 3, 3, 3)).astype(np.int8))
    scales = np.array([0.5, 0.25, 0.125], np.float32)
    calls = {
        "int8_gemm": lambda: po.int8_gemm(a, b),
        "int8_gemm_zp": lambda: po.int8_gemm(a, b, a_zero_point=3, b_zero_point=np.arange(5, dtype=np.int8)),
        "qlinear_matmul": lambda: po.qlinear_matmul(a, 0.1, 2, b, 0.2, 1, 0.5, -3),
        "quantize": lambda: po.quantize(x, scales, np.int8(4), axis=1),
        "dequantize": lambda: po.dequantize(q, scales, np.int8(-2), axis=1),
        "qconv2d": lambda: po.qconv2d(q, 0.05, 1, w, 0.02, 0, 0.1, -1, padding=1),
    }
    first = calls[op]()
    got, again = _second_call(cupy, calls[op])
    assert not [c for c in got if c in HOST_TO_DEVICE + PER_KERNEL], got
    np.testing.assert_array_equal(again.get(), first.get())
