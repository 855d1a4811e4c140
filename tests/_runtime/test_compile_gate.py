"""The offline NVRTC compile gate over every registered kernel (skips only without the nvrtc extra)."""
from __future__ import annotations

import pytest

from pygpu_ops._runtime import compile_gate, kernels

try:
    compile_gate.nvrtc_version()
    _why = None
except compile_gate.GateUnavailable as exc:
    _why = str(exc)

needs_nvrtc = pytest.mark.skipif(_why is not None, reason=f"nvrtc extra not installed: {_why}")


@needs_nvrtc
def test_every_kernel_compiles_for_every_arch_without_forbidden_spills():
    reports, errors = compile_gate.run_gate()
    assert not errors, "\n".join(f"{e.source} {e.arch}:\n{e.log}" for e in errors)
    expected = {(k.name_expression, a) for k in kernels.all_kernels() for a in compile_gate.ARCHS}
    assert {(r.kernel, r.arch) for r in reports} == expected
    spilled = [(r.kernel, r.arch, r.spills) for r in reports if not r.ok]
    assert not spilled, f"spills in register-blocked kernels: {spilled}"
    assert all(r.registers > 0 for r in reports)


@needs_nvrtc
def test_gate_reports_compile_errors_and_spills(tmp_path, monkeypatch):
    from pygpu_ops._runtime import sources

    (tmp_path / "bad.cu").write_text('extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }\n')
    (tmp_path / "spill.cu").write_text(
        'extern "C" __global__ void __launch_bounds__(1024, 2) spilly(const float* x, float* y, int n) {\n'
        "  float r[256];\n"
        "  for (int i = 0; i < 256; ++i) r[i] = x[(i * 7 + threadIdx.x) % n];\n"
        "  float s = 0.f;\n"
        "  for (int j = 0; j < 256; ++j) for (int i = 0; i < 256; ++i) s += r[i] * r[(i + j) % 256];\n"
        "  y[threadIdx.x] = s;\n}\n")
    monkeypatch.setattr(sources, "cuda_src_dir", lambda: tmp_path)
    sources.expand.cache_clear()
    try:
        bad = kernels.Kernel("bad.cu", "broken")
        reports, errors = compile_gate.run_gate([bad], archs=("sm_80",))
        assert not reports and len(errors) == 1 and "undefined_name" in errors[0].log
        spill = kernels.Kernel("spill.cu", "spilly", no_spill=True)
        reports, errors = compile_gate.run_gate([spill], archs=("sm_80",))
        assert not errors and reports[0].spills > 0 and not reports[0].ok
    finally:
        sources.expand.cache_clear()


def test_parse_ptxas_log():
    log = ("ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z3fooPf\n"
           "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]\n")
    s = compile_gate.parse_ptxas(log)["_Z3fooPf"]
    assert s == {"registers": 40, "smem": 8192, "stack_frame": 8, "spill_stores": 4, "spill_loads": 12}
