"""The CUDA backend's code path, run on the CPU: a fake ``cupy`` module backed by the emulator
stands in for CuPy, so dispatch, CudaDevice (modules memoized per device, launch checks) and the
ops' device path are exercised without a GPU. The real GPU runs the same tests with the ``gpu``
marker (tests/test_linalg.py with backend=cuda)."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po


@pytest.fixture
def cupy(fake_cupy):
    return fake_cupy


def test_cupy_inputs_dispatch_to_cuda_and_return_cupy_arrays(cupy):
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((37, 21)).astype(np.float32), rng.standard_normal((21, 45)).astype(np.float32)
    got = po.gemm(cupy.asarray(a), cupy.asarray(b), variant="vectorized")
    assert type(got) is cupy.ndarray
    np.testing.assert_allclose(got.get(), a.astype(np.float64) @ b, rtol=1e-4, atol=1e-4)
    assert "cuda" in po.available_backends()


def test_modules_are_memoized_per_device(cupy):
    a = cupy.asarray(np.ones((5, 3), np.float32))
    b = cupy.asarray(np.ones((3, 4), np.float32))
    po.gemm(a, b, variant="naive")
    po.gemm(a, b, variant="naive")
    built = [d for d, names in cupy._state["modules_built"] if "sgemm_naive<32, 32>" in names]
    assert built == [0]
    with cupy.cuda.Device(1):
        a1 = cupy.asarray(np.ones((5, 3), np.float32))
        b1 = cupy.asarray(np.ones((3, 4), np.float32))
    # Current device 0, arrays on GPU 1: the op runs on GPU 1, with GPU 1's module.
    y = po.matmul(a1, b1, variant="naive")
    assert y.device.id == 1 and cupy._state["device"] == 0
    built = [d for d, names in cupy._state["modules_built"] if "sgemm_naive<32, 32>" in names]
    assert built == [0, 1]
    np.testing.assert_array_equal(y.get(), np.full((5, 4), 3.0, np.float32))


def test_arrays_on_two_devices_are_an_error(cupy):
    a = cupy.asarray(np.ones((5, 3), np.float32))
    with cupy.cuda.Device(1):
        b = cupy.asarray(np.ones((3, 4), np.float32))
    with pytest.raises(ValueError, match=r"different devices \('a' on GPU 0, 'b' on GPU 1\)"):
        po.gemm(a, b)


CALLS = {
    "relu": lambda x, other: po.relu(x),
    "softmax": lambda x, other: po.softmax(x),
    "max_pool2d": lambda x, other: po.max_pool2d(x, 2),
    "conv2d": lambda x, other: po.conv2d(x, other["w"]),
    "im2col": lambda x, other: po.im2col(x, 2),
    "quantize": lambda x, other: po.quantize(x, 0.1),
    "int8_gemm": lambda x, other: po.int8_gemm(other["a8"], other["b8"]),
}


@pytest.mark.parametrize("call", sorted(CALLS))
def test_every_op_runs_on_its_arrays_device(cupy, call):
    with cupy.cuda.Device(1):
        x = cupy.asarray(np.random.default_rng(0).standard_normal((1, 2, 4, 4)).astype(np.float32))
        other = {"w": cupy.asarray(np.ones((3, 2, 2, 2), np.float32)),
                 "a8": cupy.asarray(np.ones((8, 4), np.int8)), "b8": cupy.asarray(np.ones((4, 3), np.int8))}
    cupy._state["entered"].clear()
    y = CALLS[call](x, other)
    assert 1 in cupy._state["entered"] and y.device.id == 1


def test_out_written_in_place_on_device(cupy):
    a = cupy.asarray(np.full((4, 3), 2.0, np.float32))
    b = cupy.asarray(np.ones((3, 5), np.float32))
    c = cupy.asarray(np.ones((4, 5), np.float32))
    r = po.gemm(a, b, c, beta=1.0, out=c)
    assert r is c
    np.testing.assert_array_equal(c.get(), np.full((4, 5), 7.0, np.float32))


def test_launch_checks_threads_against_the_kernel(cupy):
    from pygpu_ops import linalg

    v = linalg.SGEMM_LADDER[0]
    bad = linalg.GemmVariant(v.name, v.kernel, v.tile, (2048,))
    a = cupy.asarray(np.ones((4, 3), np.float32))
    with pytest.raises(ValueError, match="2048 threads, more than the kernel's limit"):
        linalg._run_device("cuda", bad, a[None], cupy.asarray(np.ones((3, 2), np.float32))[None],
                           None, None, (4, 2), np.dtype(np.float32), 1.0, 0.0)


def test_numpy_and_cupy_mixed(cupy):
    with pytest.raises(TypeError, match="mixed kinds"):
        po.gemm(np.ones((2, 2), np.float32), cupy.asarray(np.ones((2, 2), np.float32)))
