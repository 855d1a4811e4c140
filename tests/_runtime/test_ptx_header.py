"""cuda_src/common/ptx.cuh: the plain twins run under the emulator; NVRTC takes the PTX on sm_80+."""
from __future__ import annotations

import numpy as np
import pytest

from pygpu_ops._runtime import backends, kernels, sources

KERNEL = r'''#include "{header}"
// x and y are (n,), n a multiple of 4; one block of n / 4 threads stages x through shared memory.
extern "C" __global__ void stage_copy(const float* x, float* y, int n)
{{
    extern __shared__ __align__(16) float buf[];
    const int i = threadIdx.x * 4;
    if (i < n)
        cp_async_16(&buf[i], &x[i]);
    cp_async_commit();
    cp_async_wait_all();
    // Every thread's copy must have landed before any thread reads another's slot.
    __syncthreads();
    const int j = n - 4 - i;
    if (j >= 0)
        *reinterpret_cast<float4*>(&y[i]) = *reinterpret_cast<const float4*>(&buf[j]);
}}
'''


@pytest.fixture
def source(tmp_path, monkeypatch):
    header = sources.cuda_src_dir() / "common" / "ptx.cuh"
    (tmp_path / "stage.cu").write_text(KERNEL.format(header=header))
    monkeypatch.setattr(sources, "cuda_src_dir", lambda: tmp_path)
    sources.expand.cache_clear()
    yield kernels.Kernel("stage.cu", "stage_copy")
    sources.expand.cache_clear()


def test_plain_twins_under_the_emulator(source):
    if backends.problem("emulator"):
        pytest.skip(backends.problem("emulator"))
    from pygpu_ops._runtime import emulator

    mod = emulator.RawModule(code=sources.expand(source.source), options=source.options())
    n = 64
    x = emulator.to_device(np.arange(n, dtype=np.float32))
    y = emulator.empty((n,), np.float32)
    mod.get_function("stage_copy")((1,), (n // 4,), (x, y, np.int32(n)), shared_mem=n * 4)
    want = np.arange(n, dtype=np.float32).reshape(-1, 4)[::-1].reshape(-1)
    np.testing.assert_array_equal(y, want)


def test_nvrtc_takes_the_ptx(source):
    from pygpu_ops._runtime import compile_gate

    found = compile_gate.available_nvrtc()
    if not found:
        pytest.skip("no NVRTC: pip install 'pygpu_ops[nvrtc]'")
    for nv in found:
        for arch, expect in (("sm_80", True), ("sm_90", True), ("sm_75", False)):
            reports, error = compile_gate.compile_module([source], arch, nv)
            assert error is None and reports[0].registers > 0
            opts = source.options() + (f"--gpu-architecture=compute_{arch[3:]}",)
            res = nv.compile(sources.expand(source.source), "stage.cu", opts, output="ptx")
            assert res.ok, res.log
            assert (b"cp.async" in res.output) == expect, (nv.version, arch)
