"""The offline NVRTC compile gate over every registered kernel, under NVRTC 12 and NVRTC 13.

Each NVRTC is tested where its wheel is installed (the ``nvrtc`` extra brings both) and skipped,
saying what to install, where it is not.
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from pygpu_ops import cli
from pygpu_ops._runtime import compile_gate, kernels, sources


def _why_missing(major):
    try:
        compile_gate.load_nvrtc(major)
        return None
    except compile_gate.GateUnavailable as exc:
        return str(exc)


def _needs(*majors):
    why = [w for w in map(_why_missing, majors) if w]
    return pytest.mark.skipif(bool(why), reason="; ".join(why))


NVRTC = [pytest.param(m, marks=_needs(m), id=f"nvrtc{m}") for m in compile_gate.NVRTC_MAJORS]


@pytest.mark.parametrize("major", NVRTC)
def test_every_kernel_compiles_for_every_arch_without_forbidden_spills(major):
    """The registered set under one NVRTC: no errors, every (kernel, arch), no spills where forbidden.

    Under NVRTC 13.5 int8_gemm_mma (the kernel "auto" picks on sm_80+) used to spill on sm_75
    and sm_90, every instantiation; NVRTC 12.9 did not show it.
    """
    result = compile_gate.run_gate(nvrtc=[major])
    assert not result.errors, "\n".join(f"{e.source} {e.arch}:\n{e.log}" for e in result.errors)
    assert not result.skipped   # NVRTC 12 and 13 both support every default arch
    nv = compile_gate.load_nvrtc(major)
    expected = {(k.name_expression, a) for k in kernels.all_kernels() for a in compile_gate.ARCHS}
    assert {(r.kernel, r.arch) for r in result.reports} == expected
    assert {r.nvrtc for r in result.reports} == {nv.version}
    spilled = [(r.kernel, r.arch, r.spills) for r in result.bad]
    assert not spilled, f"spills under NVRTC {nv.version} in register-blocked kernels: {spilled}"
    assert all(r.registers > 0 for r in result.reports)


@pytest.mark.parametrize("major", NVRTC)
def test_gate_reports_compile_errors_and_spills(major, cuda_dir):
    (cuda_dir / "bad.cu").write_text('extern "C" __global__ void broken(float* x) { x[0] = undefined_name; }\n')
    (cuda_dir / "spill.cu").write_text(
        'extern "C" __global__ void __launch_bounds__(1024, 2) spilly(const float* x, float* y, int n) {\n'
        "  float r[256];\n"
        "  for (int i = 0; i < 256; ++i) r[i] = x[(i * 7 + threadIdx.x) % n];\n"
        "  float s = 0.f;\n"
        "  for (int j = 0; j < 256; ++j) for (int i = 0; i < 256; ++i) s += r[i] * r[(i + j) % 256];\n"
        "  y[threadIdx.x] = s;\n}\n")
    version = compile_gate.load_nvrtc(major).version
    bad = kernels.Kernel("bad.cu", "broken")
    result = compile_gate.run_gate([bad], archs=("sm_80",), nvrtc=[major])
    assert not result.reports and len(result.errors) == 1 and "undefined_name" in result.errors[0].log
    assert result.errors[0].nvrtc == version
    spill = kernels.Kernel("spill.cu", "spilly", no_spill=True)
    result = compile_gate.run_gate([spill], archs=("sm_80",), nvrtc=[major])
    assert not result.errors and result.reports[0].spills > 0 and result.bad == result.reports
    assert result.reports[0].nvrtc == version


@pytest.mark.parametrize("major", NVRTC)
def test_gate_compiles_with_cupys_options(major, cuda_dir):
    """What CuPy's RawModule adds: host-less functions are device code, and floats flush to zero."""
    (cuda_dir / "cupyish.cu").write_text(
        "float twice(float v) { return 2.f * v; }   // no __device__: CuPy makes it one\n"
        'extern "C" __global__ void scale(float* x, float s) { x[threadIdx.x] = twice(x[threadIdx.x]) * s; }\n')
    k = kernels.Kernel("cupyish.cu", "scale")
    nv = compile_gate.load_nvrtc(major)
    reports, error = compile_gate.compile_module([k], "sm_80", nv)
    assert error is None and reports[0].registers > 0
    res = nv.compile(sources.expand(k.source), k.source, compile_gate.gate_options(k, "sm_80"), output="ptx")
    assert res.ok and re.search(rb"mul(\.rn)?\.ftz\.f32", res.output), res.output.decode()
    # Without CuPy's options the same source does not compile: the gate must not be laxer.
    plain = nv.compile(sources.expand(k.source), k.source, k.options() + ("-arch=sm_80",))
    assert not plain.ok and "twice" in plain.log


@_needs(12, 13)
def test_an_arch_one_nvrtc_dropped_is_gated_under_the_other(cuda_dir):
    (cuda_dir / "tiny.cu").write_text('extern "C" __global__ void tiny(int* x) { x[threadIdx.x] += 1; }\n')
    k = kernels.Kernel("tiny.cu", "tiny")
    v12, v13 = compile_gate.load_nvrtc(12), compile_gate.load_nvrtc(13)
    dropped = [a for a in v12.archs if a not in v13.archs]
    assert "sm_70" in dropped and "sm_90" in v13.archs
    result = compile_gate.run_gate([k], archs=("sm_70", "sm_90"))
    assert sorted((r.nvrtc, r.arch) for r in result.reports) == sorted(
        [(v12.version, "sm_70"), (v12.version, "sm_90"), (v13.version, "sm_90")])
    assert [(s.nvrtc, s.arch, s.gated_under) for s in result.skipped] == [(v13.version, "sm_70", (v12.version,))]
    assert "gated under NVRTC " + v12.version + " only" in result.skipped[0].message
    with pytest.raises(compile_gate.GateUnavailable, match="sm_70 is supported by none of NVRTC 13"):
        compile_gate.run_gate([k], archs=("sm_70",), nvrtc=[13])
    with pytest.raises(ValueError, match="arch must look like 'sm_90'"):
        compile_gate.run_gate([k], archs=("90",))


def test_a_missing_nvrtc_says_what_to_install(monkeypatch):
    monkeypatch.setattr(compile_gate, "_LOADED", {})
    monkeypatch.setattr(compile_gate, "_candidates", lambda major: ["/nonexistent/libnvrtc.so.99"])
    with pytest.raises(compile_gate.GateUnavailable, match=r"NVRTC 13 not found: pip install 'pygpu_ops\[nvrtc13\]' "
                                                           r"\(the nvidia-cuda-nvrtc wheel"):
        compile_gate.load_nvrtc(13)
    with pytest.raises(compile_gate.GateUnavailable, match=r"pygpu_ops\[nvrtc12\]' \(the nvidia-cuda-nvrtc-cu12"):
        compile_gate.load_nvrtc(12)
    with pytest.raises(compile_gate.GateUnavailable, match=r"pip install 'pygpu_ops\[nvrtc\]'"):
        compile_gate.run_gate([])
    with pytest.raises(ValueError, match="nvrtc must be one of 12, 13, got 11"):
        compile_gate.load_nvrtc(11)
    assert cli.main(["check", "--nvrtc", "13"]) == 2


@_needs(12, 13)
def test_check_command_gates_under_both_nvrtc(capsys):
    v12, v13 = compile_gate.load_nvrtc(12).version, compile_gate.load_nvrtc(13).version
    assert cli.main(["check", "--filter", "zero_point_sums", "--arch", "sm_90"]) == 0
    out = capsys.readouterr().out
    assert f"NVRTC {v12} (" in out and f"NVRTC {v13} (" in out
    assert re.search(rf"int8_gemm_row_sums\s+{re.escape(v13)}\s+sm_90\s+\d+", out)
    assert f"check passed (NVRTC {v12}, {v13}): 4 kernel builds" in out
    assert cli.main(["check", "--filter", "zero_point_sums", "--arch", "sm_70", "--nvrtc", "12", "--nvrtc", "13",
                     "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert [n["version"] for n in doc["nvrtc"]] == [v12, v13]
    assert {(r["nvrtc"], r["arch"]) for r in doc["reports"]} == {(v12, "sm_70")}
    assert doc["skipped"][0]["arch"] == "sm_70" and doc["skipped"][0]["nvrtc"] == v13
    assert cli.main(["check", "--filter", "zero_point_sums", "--arch", "sm_70", "--nvrtc", "13"]) == 2
    assert "sm_70 is supported by none of NVRTC" in capsys.readouterr().err


def test_parse_ptxas_log():
    log = ("ptxas info    : Compiling entry function '_Z3fooPf' for 'sm_90'\n"
           "ptxas info    : Function properties for _Z3fooPf\n"
           "ptxas         .     8 bytes stack frame, 4 bytes spill stores, 12 bytes spill loads\n"
           "ptxas info    : Used 40 registers, used 1 barriers, 8192 bytes smem, 400 bytes cmem[0]\n")
    s = compile_gate.parse_ptxas(log)["_Z3fooPf"]
    assert s == {"registers": 40, "smem": 8192, "stack_frame": 8, "spill_stores": 4, "spill_loads": 12}


# ------------------------------------------------------------------------------------------------
# pyproject.toml: the extras bring what the runtime and the gate need
# ------------------------------------------------------------------------------------------------
PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"
_REQ = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[([^\]]*)\])?\s*([^;]*)")


def _extras():
    tomllib = pytest.importorskip("tomllib")
    if not PYPROJECT.is_file():
        pytest.skip(f"no {PYPROJECT} (installed without the source tree)")
    with PYPROJECT.open("rb") as f:
        project = tomllib.load(f)["project"]
    out = {}
    for extra, reqs in project["optional-dependencies"].items():
        parsed = {}
        for req in reqs:
            name, ex, spec = _REQ.match(req).groups()
            parsed[name.lower().replace("_", "-")] = ({e.strip() for e in (ex or "").split(",") if e.strip()},
                                                      spec.strip())
        out[extra] = parsed
    return project["name"].lower().replace("_", "-"), out


def _admits(spec, version):
    from packaging.specifiers import SpecifierSet

    return SpecifierSet(spec).contains(version)


@pytest.mark.parametrize("extra, cupy", [("cuda12", "cupy-cuda12x"), ("cuda13", "cupy-cuda13x")])
def test_cuda_extras_bring_cupy_with_its_toolkit_wheels(extra, cupy):
    """Without CuPy's [ctk] extra, CuPy 14 on a machine with no CUDA toolkit fails with "Failed to
    auto-detect CUDA root directory"; [ctk] (CuPy >= 14) pulls cuda-toolkit[nvrtc, ...] of its major."""
    _, extras = _extras()
    assert set(extras[extra]) == {cupy}
    ex, spec = extras[extra][cupy]
    assert "ctk" in ex
    assert _admits(spec, "14.2.0") and not _admits(spec, "13.6.0")


def test_gate_extras_bring_nvrtc_12_and_13():
    name, extras = _extras()
    for major in compile_gate.NVRTC_MAJORS:
        package, extra, _, _ = compile_gate._WHEELS[major]
        # what the gate's error message tells to install; nvrtc13 also brings the nvdisasm of
        # pygpu_ops.analysis.sass (it reads NVRTC 12 cubins too)
        assert set(extras[extra]) == {package} | ({"nvidia-cuda-nvdisasm"} if major == 13 else set()), extra
        spec = extras[extra][package][1]
        assert _admits(spec, f"{major}.9.86") and not _admits(spec, f"{major + 1}.0.0")
        assert not _admits(spec, f"{major - 1}.8.0")
    nvdisasm = extras["nvrtc13"]["nvidia-cuda-nvdisasm"][1]
    assert _admits(nvdisasm, "13.5.37") and not _admits(nvdisasm, "14.0.0") and not _admits(nvdisasm, "12.9.86")
    # "nvrtc" (the README's test command) is every gate extra, so the suite gates under both.
    assert extras["nvrtc"] == {name: ({f"nvrtc{m}" for m in compile_gate.NVRTC_MAJORS}, "")}
