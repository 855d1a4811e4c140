"""The no-GPU bench's baselines: a ``torch-cpu`` vendor row per group at the fallback's thread
count where PyTorch is importable (plain NumPy beside it), plain NumPy as the vendor without it;
the ratio ours / baseline, interleaved timing, and the peak memory of each row."""
from __future__ import annotations

import json

import pytest

from pygpu_ops import bench, cli
from pygpu_ops._runtime import backends, threads


def _run(tmp_path, monkeypatch, *ops, env_threads=None):
    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    if env_threads is not None:
        monkeypatch.setenv(threads.ENV_VAR, env_threads)
    path = tmp_path / "r.json"
    assert cli.main(["bench", "--quick", "--ops", *ops, "--sizes", "64", "--repeats", "3", "--no-progress",
                     "--no-analysis", "--json", str(path)]) == 0
    return json.loads(path.read_text())


def test_torch_cpu_rows_are_the_baseline(tmp_path, monkeypatch, capsys):
    torch = pytest.importorskip("torch")
    before = torch.get_num_threads()
    seen = []
    real = bench.CpuTimer.measure

    def spy(self, case, repeats):
        if case.variant == bench.TORCH_CPU:
            seen.append(torch.get_num_threads())
        return real(self, case, repeats)
    monkeypatch.setattr(bench.CpuTimer, "measure", spy)
    doc = _run(tmp_path, monkeypatch, "gemm", "elementwise", "int8_gemm", env_threads="1")
    assert doc["meta"]["threads"] == 1 and doc["meta"]["torch"] == torch.__version__
    assert seen and set(seen) == {1}                   # PyTorch at the fallback's thread count
    assert torch.get_num_threads() == before           # and restored afterwards
    rows = doc["results"]
    groups = {r["group"] for r in rows}
    for g in groups:
        sel = [r for r in rows if r["group"] == g]
        vendor = [r for r in sel if r["vendor"]]
        assert [r["variant"] for r in vendor] == [bench.TORCH_CPU], g
        for r in sel:
            assert r["status"] == "ok"
            assert r["time_vs_vendor"] == pytest.approx(r["op_median_ms"] / vendor[0]["op_median_ms"])
            assert r["peak_traced_bytes"] >= 0
            assert r["peak_rss_bytes"] is None or r["peak_rss_bytes"] >= 0
        ours = [r for r in sel if r["variant"] == "numpy backend"]
        assert len(ours) == 1 and ours[0]["correct"]
    # the plain NumPy formulations stay, as ordinary rows
    assert {"numpy.matmul", "numpy.maximum", "numpy float64 matmul"} <= {r["variant"] for r in rows}
    out = capsys.readouterr().out
    assert "time/vendor" in out and "torch-cpu" in out


def test_without_torch_plain_numpy_is_the_baseline(tmp_path, monkeypatch):
    monkeypatch.setattr(bench, "_torch_cpu", lambda: None)
    doc = _run(tmp_path, monkeypatch, "gemm", "elementwise")
    assert "torch" not in doc["meta"] and "plain NumPy" in doc["meta"]["baseline"]
    rows = doc["results"]
    assert bench.TORCH_CPU not in {r["variant"] for r in rows}
    assert {r["variant"] for r in rows if r["vendor"]} == {"numpy.matmul", "numpy.maximum",
                                                            "numpy.ascontiguousarray"}
    assert all("time_vs_vendor" in r for r in rows)


def test_peak_memory_counts_the_output():
    import numpy as np

    holder = {}
    n = 4 << 20                                         # 32 MiB of float64

    def fn():
        holder["y"] = np.ones(n)
    fn()
    got = bench.peak_memory(fn)
    assert 0.9 * 8 * n <= got["peak_traced_bytes"] <= 2.1 * 8 * n
    assert got["peak_rss_bytes"] is None or got["peak_rss_bytes"] <= 2.1 * 8 * n


def test_groups_are_timed_in_alternating_blocks(monkeypatch):
    """Each case's first call (errors), then per round a block of each case in turn: a warm-up
    call and its share of the timed calls (7 over 3 rounds: 2, 2, 3), then the memory calls."""
    order = []
    cases = [bench.Case("x", "float32", v, "1", "GB/s", 1.0, (lambda v=v: order.append(v)), vendor=v == "a",
                        group="g") for v in ("a", "b")]
    timer = bench.CpuTimer(settle_s=0, warm_s=0)
    rows = bench.run_cases(cases, timer, 7, progress=False)
    assert [r["repeats"] for r in rows] == [7, 7]
    blocks = ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 4 + ["b"] * 4
    assert order[:2 + len(blocks)] == ["a", "b"] + blocks
    assert "3 rounds" in timer.description["protocol"]


def test_the_pause_and_warm_up_are_spent(monkeypatch):
    slept = []
    monkeypatch.setattr(bench.time, "sleep", slept.append)
    calls = []
    cases = [bench.Case("x", "float32", v, "1", "GB/s", 1.0, (lambda v=v: calls.append(v)), group="g")
             for v in ("a", "b")]
    bench.run_cases(cases, bench.CpuTimer(settle_s=0.5, warm_s=0.01), 3, progress=False)
    assert slept == [0.5] * 6                     # one pause per block: 2 cases x 3 rounds
    assert calls.count("a") > 6                   # warm-up calls fill 10 ms per block
    with pytest.raises(ValueError, match="--settle"):
        bench.CpuTimer(settle_s=-1)
    monkeypatch.setenv("PYGPU_OPS_BENCH_SETTLE", "0.125")
    assert bench.CpuTimer().settle_s == 0.125


def test_a_failing_case_in_an_interleaved_group_is_a_failed_row(capsys):
    def boom():
        raise RuntimeError("no")
    cases = [bench.Case("x", "float32", "a", "1", "GB/s", 1.0, lambda: None, vendor=True, group="g"),
             bench.Case("x", "float32", "b", "1", "GB/s", 1.0, boom, group="g")]
    rows = bench.run_cases(cases, bench.CpuTimer(), 2, progress=False)
    assert rows[0]["status"] == "ok" and rows[1]["status"] == "failed"
    assert rows[1]["error"]["message"] == "no"
