"""Static + dynamic shared memory: what the emulator measures against ptxas, and CUDA's 48 KiB
rule through ``Device.launch``.

A block may use 48 KiB of shared memory, static and dynamic together, unless the kernel's
``max_dynamic_shared_size_bytes`` is raised (the opt-in), to at most the device's opt-in limit
(227 KiB on sm_90) minus the static part. The only kernel launched with dynamic shared memory is
``softmax_block`` (it caches a row while the row takes at most 64 KiB); its 1024-thread blocks
have 256 (float) / 512 (double) bytes of static shared memory, so rows of 12225..12288 float32 or
6081..6144 float64 elements fit in 48 KiB of dynamic shared memory but not with the static part.
"""
from __future__ import annotations

import numpy as np
import pytest

from pygpu_ops import normalization as nz
from pygpu_ops._runtime import backends, compile_gate, kernels
from pygpu_ops._runtime.device import Launch, get_device

KiB = 1024

try:
    compile_gate.nvrtc_version()
    _no_nvrtc = None
except compile_gate.GateUnavailable as exc:
    _no_nvrtc = str(exc)


def _need_emulator():
    why = backends.problem("emulator")
    if why is not None:
        pytest.skip(f"backend 'emulator' unavailable: {why}")


@pytest.mark.skipif(_no_nvrtc is not None, reason=f"nvrtc extra not installed: {_no_nvrtc}")
def test_emulator_static_shared_memory_matches_ptxas_for_every_kernel():
    """ptxas's per-kernel smem (sm_90, under every NVRTC installed) and the emulator's
    shared_size_bytes agree exactly, for every registered kernel (including __shared__ declared
    in __device__ helpers)."""
    _need_emulator()
    result = compile_gate.run_gate(archs=("sm_90",))
    assert not result.errors, "\n".join(f"{e.source} {e.arch}:\n{e.log}" for e in result.errors)
    every = list(kernels.all_kernels())
    by_nvrtc = {}
    for r in result.reports:
        by_nvrtc.setdefault(r.nvrtc, {})[(r.source, r.kernel)] = r.smem
    assert by_nvrtc and all(len(p) == len(every) for p in by_nvrtc.values())
    versions = sorted(by_nvrtc)
    assert all(by_nvrtc[v] == by_nvrtc[versions[0]] for v in versions), "the NVRTCs disagree on smem"
    ptxas = by_nvrtc[versions[0]]
    dev = get_device("emulator")
    measured = {(k.source, k.name_expression): dev.function(k).attributes["shared_size_bytes"]
                for k in every}
    differ = {k: (ptxas[k], measured[k]) for k in measured if ptxas[k] != measured[k]}
    assert not differ, f"(ptxas, emulator) static shared memory differs: {differ}"
    # the softmax window below depends on these
    assert ptxas[("softmax/04_block.cu", "softmax_block<float, false, 1024>")] == 256
    assert ptxas[("softmax/04_block.cu", "softmax_block<double, true, 1024>")] == 512


def _block_kernel(dtype, log):
    return nz.SOFTMAX_LADDER[-1].kernels[(np.dtype(dtype), log, 1024)]


def _reset_opt_in(backend, dtype, log):
    """Back to CUDA's default for the kernel (what a fresh process has), so that an opt-in made
    by an earlier test cannot hide a missing one."""
    k = get_device(backend).loaded(_block_kernel(dtype, log))
    default = 48 * KiB - int(k.fn.attributes["shared_size_bytes"])
    k.fn.max_dynamic_shared_size_bytes = default
    k.max_dynamic_smem = default  # the Device's memo of what it set, reset with the attribute
    return k.fn


def _reference(x, log):
    eps = float(np.finfo(x.dtype).eps)
    z = x.astype(np.float64) - x.max(axis=1, keepdims=True)
    s = np.exp(z).sum(axis=1, keepdims=True)
    L = x.shape[1]
    if log:
        w = z - np.log(s)
        return w, eps * (2 * np.abs(z) + np.abs(w) + np.abs(np.log(s)) + L + 8)
    w = np.exp(z) / s
    return w, w * eps * (2 * np.abs(z) + L + 8) + 4 * float(np.finfo(x.dtype).tiny)


# Each side of the window: all fits in 48 KiB / first length that does not / last cached length
# that fits in 48 KiB of dynamic shared memory alone; and the top of the cache (64 KiB).
WINDOW = [(np.float32, 12224), (np.float32, 12225), (np.float32, 12288), (np.float32, 16384),
          (np.float64, 6080), (np.float64, 6081), (np.float64, 6144), (np.float64, 8192)]


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("dtype,L", WINDOW, ids=[f"{np.dtype(d).name}-{n}" for d, n in WINDOW])
def test_softmax_block_at_the_48k_window(device_backend, dtype, L, log):
    static = 256 if dtype == np.float32 else 512
    cached = L * np.dtype(dtype).itemsize <= nz.BLOCK_CACHE_BYTES
    assert cached
    fn = _reset_opt_in(device_backend, dtype, log)
    assert int(fn.attributes["shared_size_bytes"]) == static
    rng = np.random.default_rng(L)
    x = (2.0 * rng.standard_normal((3, L))).astype(dtype)
    x[:, ::97] += 9.0  # outliers, so some probabilities are far from tiny
    xs = x
    if device_backend == "cuda":
        import cupy

        xs = cupy.asarray(x)
    f = nz.log_softmax if log else nz.softmax
    got = f(xs, variant="block", backend=device_backend)
    got = got.get() if hasattr(got, "get") else np.asarray(got)
    want, bound = _reference(x, log)
    assert np.all(np.abs(got - want) <= bound)
    # the wrapper opted in exactly when static + dynamic passes 48 KiB
    assert fn.max_dynamic_shared_size_bytes >= L * x.itemsize
    opted = fn.max_dynamic_shared_size_bytes != 48 * KiB - static
    assert opted == (static + L * x.itemsize > 48 * KiB)


@pytest.mark.parametrize("dtype,L", [(np.float32, 12224), (np.float32, 12225), (np.float32, 12288),
                                     (np.float64, 6080), (np.float64, 6081), (np.float64, 6144)])
def test_emulator_refuses_static_plus_dynamic_above_48k_without_the_opt_in(dtype, L):
    """What a GPU does (CUDA_ERROR_INVALID_VALUE): the launch itself, without Device.launch."""
    _need_emulator()
    from pygpu_ops._runtime import emulator as emu

    fn = _reset_opt_in("emulator", dtype, False)
    x = emu.to_device(np.ones((1, L), dtype))
    y = emu.empty((1, L), dtype)
    args = (x, y, np.int64(1), np.int32(L), np.int32(1))
    dyn = L * np.dtype(dtype).itemsize
    if fn.shared_size_bytes + dyn <= 48 * KiB:
        fn(1, 1024, args, shared_mem=dyn)
        np.testing.assert_allclose(y, np.full((1, L), 1.0 / L), rtol=1e-6)
    else:
        with pytest.raises(emu.LaunchError, match="without opting in"):
            fn(1, 1024, args, shared_mem=dyn)


def test_device_launch_stops_at_the_opt_in_limit_with_a_clear_error():
    """static + dynamic up to the device's opt-in maximum runs; one byte more is a ValueError
    from Device.launch (not a driver error)."""
    _need_emulator()
    from pygpu_ops._runtime import emulator as emu

    dev = get_device("emulator")
    k = _block_kernel(np.float32, False)
    _reset_opt_in("emulator", np.float32, False)
    limit = dev.max_shared_optin()
    assert limit == 227 * KiB
    L = (limit - 256) // 4
    x = emu.to_device(np.zeros((1, L), np.float32))
    y = emu.empty((1, L), np.float32)
    args = (x, y, np.int64(1), np.int32(L), np.int32(1))
    dev.launch(k, Launch(grid=(1,), block=(1024,), shared_mem=4 * L), args)
    np.testing.assert_allclose(y, np.full((1, L), 1.0 / L), rtol=1e-6)
    with pytest.raises(ValueError, match=r"softmax_block<float, false, 1024>: 232196 bytes of "
                                         r"dynamic \+ 256 static shared memory exceed the device's "
                                         r"232448 bytes per block"):
        dev.launch(k, Launch(grid=(1,), block=(1024,), shared_mem=4 * L + 4), args)
