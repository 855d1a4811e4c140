"""PyTorch tensors, streams and devices on a real GPU (skipped, with the reason, without one).
The same dispatch decisions are checked on the CPU with fakes in tests/_runtime/."""
from __future__ import annotations

import numpy as np
import pytest

from pygpu_ops._runtime import backends

pytestmark = pytest.mark.gpu


@pytest.fixture
def cupy():
    why = backends.problem("cuda")
    if why is not None:
        pytest.skip(f"backend 'cuda' unavailable: {why}")
    import cupy

    return cupy


@pytest.fixture
def torch(cupy):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("PyTorch has no CUDA device")
    return torch


def test_torch_tensors_zero_copy_and_back(torch, cupy):
    import pygpu_ops as po

    a = torch.randn(70, 33, device="cuda")
    b = torch.randn(33, 45, device="cuda")
    assert cupy.asarray(a).data.ptr == a.data_ptr()  # how the op sees it: no copy
    y = po.gemm(a, b)
    assert isinstance(y, cupy.ndarray)
    t = torch.from_dlpack(y)  # back to PyTorch without a copy
    assert t.data_ptr() == y.data.ptr
    torch.testing.assert_close(t, a @ b, rtol=1e-4, atol=1e-4)
    r = po.relu(a)
    torch.testing.assert_close(torch.from_dlpack(r), torch.relu(a))


def test_launches_follow_cupys_current_stream(cupy):
    import pygpu_ops as po

    x = cupy.random.default_rng(0).standard_normal((2048, 2048), dtype=np.float32)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        y = po.gemm(x, x)
        z = po.relu(y)
        done = stream.record()
    done.synchronize()
    cupy.testing.assert_allclose(z, cupy.maximum(x @ x, 0), rtol=1e-3, atol=1e-3)


def test_stream_shared_with_torch(torch, cupy):
    import pygpu_ops as po

    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        a = torch.randn(512, 512, device="cuda")
        with cupy.cuda.ExternalStream(s.cuda_stream):
            y = po.gemm(a, a)
        t = torch.from_dlpack(y) * 2  # ordered after the gemm on the same stream
    s.synchronize()
    torch.testing.assert_close(t, (a @ a) * 2, rtol=1e-3, atol=1e-3)


def test_second_device(cupy):
    import pygpu_ops as po

    if cupy.cuda.runtime.getDeviceCount() < 2:
        pytest.skip("needs two GPUs")
    with cupy.cuda.Device(1):
        a = cupy.random.default_rng(1).standard_normal((64, 32), dtype=np.float32)
        b = a.T.copy()
    y = po.gemm(a, b)  # current device 0, arrays on 1
    assert y.device.id == 1
    with cupy.cuda.Device(1):
        cupy.testing.assert_allclose(y, a @ a.T, rtol=1e-4, atol=1e-4)
