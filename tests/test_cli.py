"""The pygpu-ops command on the CPU: parsing, info, the no-GPU bench path, selftest's exit code."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pygpu_ops import bench, cli, selftest
from pygpu_ops._runtime import backends


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pygpu_ops" in out and "backend   numpy     available" in out


def test_bench_without_gpu_says_so_first(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    path = tmp_path / "r.json"
    assert cli.main(["bench", "--quick", "--ops", "gemm", "--sizes", "64", "--repeats", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pygpu-ops bench: no GPU here")
    doc = json.loads(path.read_text())
    assert doc["meta"]["backend"] == "numpy"
    torch_row = {bench.TORCH_CPU} if bench._torch_cpu() is not None else set()   # PyTorch's baseline, where importable
    assert {r["variant"] for r in doc["results"]} == {"numpy.matmul", "numpy backend"} | torch_row
    assert all(r["value"] > 0 and r["repeats"] == 2 for r in doc["results"])
    # no GPU: the op time (wall clock) is the only time, and the throughput comes from it
    assert doc["meta"]["timing"]["throughput_from"] == "op" and doc["meta"]["timing"]["kernel"] is None
    assert all(r["kernel_median_ms"] is None and r["kernel_method"] is None and r["value_from"] == "op"
               and r["op_median_ms"] > 0 for r in doc["results"])


def test_selftest_passes_on_numpy(capsys):
    assert cli.main(["selftest", "--backend", "numpy", "-q"]) == 0
    assert "selftest: all passed" in capsys.readouterr().out


def test_selftest_fails_on_a_broken_reference(monkeypatch, capsys):
    real = selftest.CASES[0]

    def broken(backend):
        got, want, tol = real.run(backend)
        return got, want + 1.0, tol

    monkeypatch.setattr(selftest, "CASES", [selftest.Case(real.name, broken)])
    assert cli.main(["selftest", "--backend", "numpy", "-q"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_bad_arguments_exit_2():
    with pytest.raises(SystemExit) as e:
        cli.main(["selftest", "--backend", "tpu"])
    assert e.value.code == 2


def test_bench_json_schema_and_plots(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    path, plots = tmp_path / "r.json", tmp_path / "plots"
    assert cli.main(["bench", "--sizes", "32", "64", "--repeats", "2", "--json", str(path),
                     "--plot", str(plots), "--no-progress"]) == 0
    doc = json.loads(path.read_text())
    assert set(doc) == {"meta", "results", "analysis"}
    assert {"pygpu_ops", "python", "numpy", "date", "backend", "device", "repeats", "timing"} <= set(doc["meta"])
    # without a GPU the bench also analyses the SGEMM ladder and the memory-bound ops (no DGEMM)
    from pygpu_ops import linalg
    from pygpu_ops.analysis.analyze import ROW_KEYS

    rows = doc["analysis"]["rows"]
    assert "modeled, not measured" in doc["analysis"]["meta"]["label"]
    assert all(r["status"] == "ok" and set(ROW_KEYS) <= set(r) for r in rows)
    assert [r["variant"] for r in rows if r["op"] == "gemm"] == list(linalg.sgemm_variants()) * 2
    assert {r["op"] for r in rows} == {"gemm", "softmax", "max_pool2d", "avg_pool2d",
                                       "global_avg_pool2d", "relu", "nchw_to_nhwc", "nhwc_to_nchw"}
    assert "pygpu-ops analyze: counts from the CPU emulator" in capsys.readouterr().out
    keys = {"op", "dtype", "variant", "size", "unit", "value", "value_from", "status", "op_median_ms",
            "op_min_ms", "op_max_ms", "kernel_median_ms", "kernel_min_ms", "kernel_max_ms", "kernel_method",
            "repeats", "vendor", "group"}
    with_vendor = {r["group"] for r in doc["results"] if r["vendor"]}
    for r in doc["results"]:
        assert keys <= set(r), keys - set(r)
        assert ("pct_vendor" in r) == (r["group"] in with_vendor)
        assert r["status"] == "ok" and r["op_min_ms"] <= r["op_median_ms"] <= r["op_max_ms"]
    assert all(r["correct"] for r in doc["results"] if "correct" in r)
    pngs = sorted(p.name for p in plots.iterdir())
    assert pngs == sorted(["avg_pool2d_float32.png", "conv2d_NCHW.png", "conv2d_NHWC.png", "embedding_float32.png",
                           "gemm_float32.png", "gemm_float64.png", "int8_gemm_int8.png",
                           "lstm_float32.png", "max_pool2d_float32.png", "nchw_to_nhwc_float32.png", "relu_float32.png",
                           "softmax_float32.png", "analyze_memory.png", "analyze_pooling.png",
                           "analyze_sgemm.png", "analyze_softmax.png"])
    assert all((plots / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_bench_gpu_path_through_fake_cupy(tmp_path, monkeypatch, capsys, fake_cupy):
    """The GPU branch (graph capture, events, L2 flush, copy bandwidth, cuBLAS rows, checks) on the fake CuPy."""
    from pygpu_ops import bench

    monkeypatch.setattr(bench, "COPY_BYTES", 1 << 16)
    monkeypatch.setattr(bench, "SOFTMAX_GPU", ((3, 40), (2, 1100)))
    monkeypatch.setattr(bench, "POOL_GPU", (1, 3, 9, 10))
    monkeypatch.setattr(bench, "RESNET50_3X3", (("tiny", 5, 6),))
    monkeypatch.setattr(bench, "CONV_BATCH_GPU", 2)
    monkeypatch.setattr(bench, "RELU_N_GPU", 1001)
    monkeypatch.setattr(bench, "TRANSPOSE_GPU", (2, 3, 5, 7))
    monkeypatch.setattr(bench, "EMBEDDING", (50, 12, (3, 4)))
    monkeypatch.setattr(bench, "LSTM", (3, 4, 5, 6))
    path = tmp_path / "g.json"
    rc = cli.main(["bench", "--sizes", "40", "--variants", "naive", "warptile", "--repeats", "1",
                   "--json", str(path), "--no-progress", "--plot", str(tmp_path / "plots")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert out.startswith("pygpu-ops bench: timing the CUDA kernels")
    doc = json.loads(path.read_text())
    assert doc["meta"]["backend"] == "cuda" and doc["meta"]["copy"]["GB/s"] > 0
    gemm = [r["variant"] for r in doc["results"] if r["op"] == "gemm"]
    assert gemm == ["cuBLAS SGEMM", "naive", "warptile", "cuBLAS DGEMM", "dgemm_blocktile_2d"]
    ops = {"gemm", "conv2d", "relu", "nchw_to_nhwc", "softmax", "max_pool2d", "avg_pool2d", "int8_gemm", "embedding",
           "lstm"}
    assert {r["op"] for r in doc["results"]} == ops
    assert all(r["correct"] for r in doc["results"] if "correct" in r)
    assert {r["op"] for r in doc["results"] if "correct" in r} == ops
    assert all("pct_peak" in r for r in doc["results"] if r["op"] == "gemm" and r["dtype"] == "float32")
    assert all("pct_copy" in r for r in doc["results"] if r["unit"] == "GB/s")
    assert len(list((tmp_path / "plots").iterdir())) == 12
    # both times on every row; the kernel time from a replayed graph, except where the call copies
    # from the host (int8_gemm uploads its zero points), which falls back to events, saying why
    assert doc["meta"]["timing"]["throughput_from"] == "kernel" and "CUDA graph" in doc["meta"]["timing"]["kernel"]
    for r in doc["results"]:
        assert r["status"] == "ok" and r["value_from"] == "kernel"
        assert 0 < r["kernel_min_ms"] <= r["kernel_median_ms"] <= r["kernel_max_ms"]
        assert 0 < r["op_min_ms"] <= r["op_median_ms"] <= r["op_max_ms"]
        # every op, int8 included (its parameters come from Device.constant), is captured, except
        # our embedding: it uploads its out-of-range flag and reads it back after the kernel
        if r["op"] == "embedding" and not r["vendor"]:
            assert r["kernel_method"] == bench.KERNEL_EVENTS and "host-to-device copy" in r["capture_error"], r
        else:
            assert r["kernel_method"] == bench.KERNEL_GRAPH and "capture_error" not in r, r
    assert doc["meta"]["copy"]["kernel_method"] == bench.KERNEL_GRAPH
    assert "kernel ms: one call captured into a CUDA graph" in out and "op ms: the public call" in out


def test_bench_detects_a_wrong_kernel(monkeypatch, capsys):
    from pygpu_ops import linalg

    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    real = linalg.gemm
    monkeypatch.setattr(linalg, "gemm", lambda a, b, **kw: real(a, b, **kw).__iadd__(np.float32(np.nan)))
    assert cli.main(["bench", "--sizes", "16", "--repeats", "1", "--no-progress"]) == 1
    assert "WRONG" in capsys.readouterr().out


def test_readme_table_generator(tmp_path):
    import importlib.util
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("update_readme", Path(__file__).parent.parent / "profiling" / "update_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    readme = tmp_path / "README.md"
    readme.write_text(f"# x\n{mod.START}\nold\n{mod.END}\n{mod.C_START}\nold\n{mod.C_END}\n"
                      f"{mod.A_START}\nold\n{mod.A_END}\ntail\n")
    results = tmp_path / "results"
    results.mkdir()
    assert mod.main(["--readme", str(readme), "--results", str(results)]) == 0
    assert "not measured" in readme.read_text()
    assert "No CPU benchmark has been recorded yet." in readme.read_text()
    timing = {"kernel": "kernel ms: one call captured into a CUDA graph", "op": "op ms: the public call",
              "throughput_from": "kernel"}
    row = dict(op="gemm", dtype="float32", variant="warptile", size="4096", unit="TFLOP/s", value=45.0,
               status="ok", kernel_median_ms=3.05, kernel_method="cuda graph", op_median_ms=3.125,
               pct_vendor=90.1, correct=True)
    uncaptured = dict(row, variant="mma", op="int8_gemm", unit="TOPS", kernel_method="events around the call",
                      kernel_median_ms=1.5, op_median_ms=1.75, value=91.6, correct=False)
    failed = dict(op="softmax", dtype="float32", variant="block", size="8x8", unit="GB/s", status="failed",
                  error={"type": "CUDARuntimeError", "message": "illegal address", "stage": "timing"})
    for date, dev in (("2026-01-01T00:00:00Z", "Old GPU"), ("2026-02-01T00:00:00Z", "NVIDIA H200")):
        (results / f"{dev.replace(' ', '_')}.json").write_text(json.dumps(
            {"meta": {"backend": "cuda", "device": dev, "date": date, "cc": "9.0", "timing": timing},
             "results": [row, uncaptured, failed]}))
    assert mod.main(["--readme", str(readme), "--results", str(results)]) == 0
    text = readme.read_text()
    assert "NVIDIA H200" in text and "Old GPU" not in text and text.endswith("tail\n")
    assert "| kernel ms | op ms | throughput | % of vendor | correct |" in text
    assert "| gemm | float32 | warptile | 4096 | 3.050 | 3.125 | 45.00 TFLOP/s | 90.1% | yes |" in text
    assert "| int8_gemm | float32 | mma | 4096 | 1.500 *events* | 1.750 | 91.60 TOPS | 90.1% | **NO** |" in text
    assert "| softmax | float32 | block | 8x8 | - | - | - | - | **FAILED** (CUDARuntimeError) |" in text
    assert "Throughput and % of vendor come from the **kernel time**" in text
    assert "**kernel ms: one call captured into a CUDA graph**" in text
    assert mod.main(["--readme", str(readme), "--results", str(results), "--check"]) == 0
    newer = tmp_path / "bench.json"
    newer.write_text(json.dumps({"meta": {"backend": "cuda", "device": "NVIDIA H100 80GB HBM3",
                                          "date": "2026-03-01T10:00:00Z", "timing": timing}, "results": [row]}))
    assert mod.main(["--readme", str(readme), "--results", str(results), "--add", str(newer)]) == 0
    assert (results / "NVIDIA_H100_80GB_HBM3_2026_03_01T10_00_00Z.json").exists()
    assert "NVIDIA H100 80GB HBM3" in readme.read_text()
    cpu = tmp_path / "cpu.json"
    cpu.write_text(json.dumps({"meta": {"backend": "numpy"}, "results": []}))
    with pytest.raises(SystemExit, match="not a GPU run"):
        mod.main(["--readme", str(readme), "--results", str(results), "--add", str(cpu)])
    old = tmp_path / "old.json"   # written before the kernel/op split: refused, not misread
    old.write_text(json.dumps({"meta": {"backend": "cuda", "device": "X", "date": "2026-04-01T00:00:00Z"},
                               "results": [dict(row, median_ms=1.0)]}))
    with pytest.raises(SystemExit, match="older than the kernel/op time split"):
        mod.main(["--readme", str(readme), "--results", str(results), "--add", str(old)])
    assert not list(results.glob("X_*"))
    # a CPU run: the numpy backend against its group's torch-cpu row
    ours = dict(op="relu", dtype="float32", variant="numpy backend", size="1048576", group="relu/1048576",
                status="ok", op_median_ms=0.3, peak_traced_bytes=4 << 20)
    theirs = dict(ours, variant="torch-cpu", op_median_ms=0.2, peak_traced_bytes=None)
    alone = dict(ours, op="softmax", group="softmax/1", op_median_ms=0.5)
    cpu_run = tmp_path / "cpu_run.json"
    cpu_run.write_text(json.dumps({"meta": {"backend": "numpy", "device": "CPU (x86_64)", "threads": 2,
                                            "date": "2026-05-01T00:00:00Z", "torch": "2.13.0",
                                            "timing": {"protocol": "blocks: 3 rounds"}},
                                   "results": [theirs, ours, alone]}))
    assert mod.main(["--readme", str(readme), "--results", str(results), "--add-cpu", str(cpu_run)]) == 0
    assert (results / "cpu_CPU_x86_64_2026_05_01T00_00_00Z.json").exists()
    text = readme.read_text()
    assert "| relu | float32 | 1048576 | 0.300 | 0.200 | 1.50x | 4.0 |" in text
    assert "| softmax | float32 | 1048576 | 0.500 | - | - | 4.0 |" in text
    assert "Worst ratio: 1.50x (relu 1048576)." in text and "NVIDIA H100 80GB HBM3" in text
    with pytest.raises(SystemExit, match="not a CPU run"):
        mod.main(["--readme", str(readme), "--results", str(results), "--add-cpu", str(newer)])


def test_info_gpu_branch_through_fake_cupy(capsys, fake_cupy):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "backend   cuda      available" in out
    assert "device    0: Fake GPU (emulator) (compute capability 9.0)" in out
