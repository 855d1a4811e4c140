"""Backend dispatch as API.md specifies, checked on the CPU with fake GPU arrays."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import pygpu_ops as po
from pygpu_ops._runtime import backends


class FakeCudaArray:
    """Looks like a CUDA tensor to the dispatcher (it exposes __cuda_array_interface__)."""

    dtype = np.dtype(np.float32)
    shape = (2, 2)
    __cuda_array_interface__ = {"shape": (2, 2), "typestr": "<f4", "data": (0, False), "version": 3}


class FakeDlpackCuda:
    dtype = np.dtype(np.float32)
    shape = (2, 2)

    def __dlpack__(self, stream=None):
        raise AssertionError("not called by dispatch")

    def __dlpack_device__(self):
        return (2, 0)


class FakeDlpackCpu(FakeDlpackCuda):
    def __dlpack_device__(self):
        return (1, 0)


def test_available_backends_order():
    names = po.available_backends()
    assert names[0] == "numpy"
    assert list(names) == [n for n in backends.BACKENDS if n in names]


def test_array_kinds():
    assert backends.array_kind(np.ones(2)) == "numpy"
    assert backends.array_kind(FakeCudaArray()) == "cuda"
    assert backends.array_kind(FakeDlpackCuda()) == "cuda"
    assert backends.array_kind(FakeDlpackCpu()) is None
    assert backends.array_kind([1.0]) is None


def test_auto_numpy_and_defaults(monkeypatch):
    a = np.ones((2, 2), np.float32)
    monkeypatch.delenv(backends.ENV_VAR, raising=False)
    assert backends.resolve("op", "auto", {"a": a}) == "numpy"
    with po.use_backend("emulator"):
        assert backends.resolve("op", "auto", {"a": a}) == "emulator"
        with po.use_backend("auto"):
            assert backends.resolve("op", "auto", {"a": a}) == "numpy"
        assert backends.resolve("op", "numpy", {"a": a}) == "numpy"
    assert backends.resolve("op", "auto", {"a": a}) == "numpy"
    monkeypatch.setenv(backends.ENV_VAR, "emulator")
    assert backends.resolve("op", "auto", {"a": a}) == "emulator"
    monkeypatch.setenv(backends.ENV_VAR, "gpu")
    with pytest.raises(ValueError, match="PYGPU_OPS_BACKEND"):
        backends.resolve("op", "auto", {"a": a})


def test_env_var_for_a_whole_process():
    code = ("import numpy as np, pygpu_ops as po\n"
            "from pygpu_ops._runtime import backends\n"
            "print(backends.resolve('gemm', 'auto', {'a': np.ones(1)}))")
    out = subprocess.run([sys.executable, "-c", code], env={**__import__("os").environ, "PYGPU_OPS_BACKEND": "emulator"},
                         capture_output=True, text=True, check=True).stdout.strip()
    assert out == "emulator"


def test_mixed_kinds_is_type_error():
    with pytest.raises(TypeError, match=r"mixed kinds.*'a' is a NumPy array.*'b' is on the GPU"):
        po.gemm(np.ones((2, 2), np.float32), FakeCudaArray())


def test_numpy_inputs_on_cuda_backend_say_how_to_move():
    with pytest.raises(TypeError, match=r"cupy\.asarray"):
        po.gemm(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32), backend="cuda")


def test_gpu_inputs_on_host_backend():
    with pytest.raises(TypeError, match=r"cupy\.asnumpy"):
        backends.resolve("gemm", "emulator", {"a": FakeCudaArray()})


def test_cuda_unavailable_says_what_to_install(monkeypatch):
    monkeypatch.setitem(backends._problems, "cuda", "CuPy is not installed: pip install 'pygpu_ops[cuda12]'")
    with pytest.raises(po.BackendUnavailableError, match=r"pygpu_ops\[cuda12\]"):
        backends.resolve("gemm", "auto", {"a": FakeCudaArray()})
    assert "cuda" not in po.available_backends()


def test_unknown_array_and_backend_names():
    with pytest.raises(TypeError, match=r"argument 'a' must be a numpy.ndarray.*numpy.asarray"):
        po.gemm([[1.0]], np.ones((1, 1), np.float32))
    with pytest.raises(TypeError, match="CPU tensor"):
        po.gemm(FakeDlpackCpu(), np.ones((1, 1), np.float32))
    with pytest.raises(ValueError, match="backend must be one of"):
        po.gemm(np.ones((1, 1), np.float32), np.ones((1, 1), np.float32), backend="gpu")
    with pytest.raises(ValueError, match="use_backend"):
        with po.use_backend("tpu"):
            pass


def test_import_is_light_and_fast():
    code = ("import time, sys; t = time.perf_counter(); import pygpu_ops; dt = time.perf_counter() - t\n"
            "print(dt, 'cupy' in sys.modules, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert float(out[0]) < 1.0
    assert out[1:] == ["False", "False"]
