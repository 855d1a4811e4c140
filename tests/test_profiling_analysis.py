"""profiling/ncu_counters.py (parsing Nsight Compute's CSV) and the analysis table of
profiling/update_readme.py (modeled next to measured, the model's error)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _load(name):
    spec = importlib.util.spec_from_file_location(name, ROOT / "profiling" / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# The shape of `ncu --csv --page raw`: a header row, a units row, one row per profiled launch
# (ncu prints its own progress lines, starting with ==PROF==, around it).
NCU_CSV = '''==PROF== Connected to process 123
"ID","Kernel Name","gpu__time_duration.sum","l1tex__t_requests_pipe_lsu_mem_global_op_ld.sum","l1tex__t_sectors_pipe_lsu_mem_global_op_ld.sum","l1tex__data_pipe_lsu_wavefronts_mem_shared_op_ld.sum","smsp__sass_inst_executed_op_shared_ld.sum"
"","","usecond","request","sector","","inst"
"0","sgemm_naive<32, 32>","1,234.5","4194304","69206016","0","0"
"1","sgemm_smem_tiled<32>","20.5","131072","524288","4194304","4194304"
==PROF== Disconnected from process 123
'''


def test_parse_ncu_csv():
    mod = _load("ncu_counters")
    rows = mod.parse_csv(NCU_CSV)
    assert [name for name, _ in rows] == ["sgemm_naive<32, 32>", "sgemm_smem_tiled<32>"]
    naive = rows[0][1]
    assert naive["time"] == 1234.5 and naive["gld_requests"] == 4194304
    assert naive["gld_sectors"] == 69206016 and "gst_sectors" not in naive
    ms = mod.parse_csv(NCU_CSV.replace('"usecond"', '"msecond"'))
    assert ms[1][1]["time"] == 20.5e3
    assert mod.parse_csv("==PROF== nothing profiled\n") == []


def _analysis_row(**kw):
    row = dict(status="ok", op="gemm", variant="naive", kernel="sgemm_naive<32, 32>",
               shape="4096x4096x4096", flops=2.0 * 4096 ** 3, bytes_min=3 * 4 * 4096 ** 2,
               gld_requests=4194304, gld_sectors=69206016, gst_requests=16384, gst_sectors=524288,
               lds_requests=0, lds_wavefronts=0, sts_requests=0, sts_wavefronts=0,
               smem_bank_conflicts=0, registers=32, spill_bytes=0, static_smem=0, dynamic_smem=0,
               occupancy=1.0, limiter="warps", sass_mix={}, loop_ffma_fraction=0.18,
               compiler="NVRTC 13.5, sm_90", gpu="H200", modeled_us=1000.0, bound="dram",
               group="sgemm")
    row.update(kw)
    return row


def test_analysis_table_not_measured_then_measured(tmp_path):
    mod = _load("update_readme")
    readme = tmp_path / "README.md"
    readme.write_text(f"{mod.START}\nx\n{mod.END}\n{mod.C_START}\nx\n{mod.C_END}\n{mod.A_START}\nx\n{mod.A_END}\n")
    results = tmp_path / "results"
    results.mkdir()
    assert mod.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert "No analysis recorded yet" in readme.read_text()
    doc = {"meta": {"label": "modeled", "gpu": "H200", "arch": "sm_90", "sample_blocks": 8,
                    "expected_error": "within about 10-30%", "date": "2026-12-01"},
           "rows": [_analysis_row(),
                    _analysis_row(variant="coalesced", kernel="sgemm_coalesced<32, 32>",
                                  modeled_us=200.0)]}
    (results / "analysis_H200.json").write_text(json.dumps(doc))
    mod.main(["--readme", str(readme), "--results", str(results)])
    text = readme.read_text()
    assert "**Modeled, not measured**" in text and "Measured: **not measured** (no GPU run recorded)" in text
    assert "| gemm | naive | `sgemm_naive<32, 32>` | 4096x4096x4096 | 16.5 | - | 0 | 32 | " \
           "100% (warps) | 18.0% | - | - | 1000.0 | dram | not measured | - | - | - |" in text
    # a GPU run: ncu measured the naive launch (1250 us: the model is 20% short), the bench the
    # coalesced one
    (results / "ncu_H200_2026.json").write_text(json.dumps(
        {"meta": {"tool": "ncu", "device": "NVIDIA H200", "date": "2026-12-02"},
         "rows": [{"op": "gemm", "variant": "naive", "launch": 0, "kernel": "sgemm_naive<32, 32>",
                   "time": 1250.0, "gld_requests": 4194304, "gld_sectors": 69206016,
                   "lds_requests": 0, "lds_wavefronts": 0}]}))
    (results / "NVIDIA_H200.json").write_text(json.dumps(
        {"meta": {"backend": "cuda", "device": "NVIDIA H200", "date": "2026-12-02", "timing": {}},
         "results": [{"op": "gemm", "dtype": "float32", "variant": "coalesced", "size": "4096",
                      "status": "ok", "kernel_median_ms": 0.25, "op_median_ms": 0.3,
                      "unit": "TFLOP/s", "value": 1.0}]}))
    mod.main(["--readme", str(readme), "--results", str(results)])
    text = readme.read_text()
    assert "| 1000.0 | dram | 1250.0 (ncu) | +20% | 16.5 | - |" in text
    assert "| 200.0 | dram | 250.0 (bench) | +20% | - | - |" in text
    assert mod.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0
    # filing an ncu JSON
    out = tmp_path / "ncu.json"
    out.write_text(json.dumps({"meta": {"tool": "ncu", "device": "NVIDIA H100", "date": "d"},
                               "rows": []}))
    assert mod.main(["--readme", str(readme), "--results", str(results), "--add-ncu", str(out)]) == 0
    assert (results / "ncu_NVIDIA_H100_d.json").exists()
