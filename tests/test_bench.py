"""The benchmark's timer and its failure handling, on the fake CuPy (streams, capture, graphs).

Kernel time must be the replay of a captured graph (not the Python call), op time the public call;
a case that raises is a failed row, and the JSON is written whatever happens."""
from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from pygpu_ops import bench, cli
from pygpu_ops._runtime import backends

ROOT = Path(__file__).resolve().parent.parent


def _relu_case(fake, n=1000, calls=None):
    """A relu case on the fake GPU whose output, holder["y"], is checked by the caller."""
    import pygpu_ops as po

    host = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    x = fake.asarray(host)
    holder = {}

    def fn():
        if calls is not None:
            calls.append(1)
        holder["y"] = po.relu(x, backend="cuda")

    return bench.Case("relu", "float32", "relu_vec128", str(n), "GB/s", 8.0 * n, fn), holder, host


def test_kernel_time_replays_the_captured_graph(fake_cupy):
    calls = []
    case, holder, host = _relu_case(fake_cupy, calls=calls)
    timer = bench.GpuTimer(fake_cupy)
    case.fn()
    per_call = fake_cupy._state["kernels_run"]
    assert per_call >= 1
    calls.clear()
    fake_cupy._state["kernels_run"] = 0
    t = timer.measure(case, repeats=4)
    assert t.kernel_method == bench.KERNEL_GRAPH and t.capture_error is None
    assert len(t.kernel_ms) == 4 and len(t.op_ms) == 4 and min(t.kernel_ms + t.op_ms) > 0
    # Python ran 2 warm-up calls, 4 timed op calls and the captured one; the 4 kernel timings
    # are graph replays, which run no Python
    assert len(calls) == 2 + 4 + 1
    assert fake_cupy._state["captures"] == 1 and fake_cupy._state["graph_launches"] == 4
    # the kernels ran at the warm-up and op calls and at each replay, not while being captured
    assert fake_cupy._state["kernels_run"] == per_call * (2 + 4 + 4)
    # the output allocated during the capture (0xFF bytes: NaN) was written by the replays only
    np.testing.assert_array_equal(holder["y"].get(), np.maximum(host, 0))
    assert not timer.stream.is_capturing()


def test_every_call_runs_on_the_timing_stream(fake_cupy):
    """The ops launch on CuPy's current stream: the timer must make its own stream current for the
    warm-up, the timed calls and the capture (the L2 flush too), never the legacy stream."""
    case, _, _ = _relu_case(fake_cupy)
    timer = bench.GpuTimer(fake_cupy)
    seen = []
    inner = case.fn

    def fn():
        seen.append(fake_cupy.cuda.get_current_stream())
        inner()

    timer.measure(bench.Case(**{**case.__dict__, "fn": fn}), repeats=3)
    assert seen == [timer.stream] * (2 + 3 + 1) and timer.stream.ptr != 0
    assert fake_cupy.cuda.get_current_stream().ptr == 0   # and restores the previous one


def test_a_call_that_copies_to_the_host_falls_back_to_events(fake_cupy):
    case, holder, host = _relu_case(fake_cupy)
    inner = case.fn

    def syncing():
        inner()
        holder["host"] = holder["y"].get()   # a device-to-host copy: not capturable

    timer = bench.GpuTimer(fake_cupy)
    t = timer.measure(bench.Case(**{**case.__dict__, "fn": syncing}), repeats=3)
    assert t.kernel_method == bench.KERNEL_EVENTS
    assert "ndarray.get" in t.capture_error and "capturing" in t.capture_error
    assert len(t.kernel_ms) == 3 and fake_cupy._state["graph_launches"] == 0
    assert not timer.stream.is_capturing()
    np.testing.assert_array_equal(holder["host"], np.maximum(host, 0))


def test_a_sync_invalidating_the_capture_reports_the_first_error(fake_cupy):
    case, _, _ = _relu_case(fake_cupy)
    inner = case.fn

    def syncing():
        inner()
        fake_cupy.cuda.Device().synchronize()

    timer = bench.GpuTimer(fake_cupy)
    t = timer.measure(bench.Case(**{**case.__dict__, "fn": syncing}), repeats=2)
    assert t.kernel_method == bench.KERNEL_EVENTS
    assert t.capture_error.startswith("RuntimeError: cudaErrorStreamCaptureUnsupported")
    assert not timer.stream.is_capturing()


class _FakeTorch:
    """torch.cuda's streams and graphs, enough to follow the timer's PyTorch route."""

    def __init__(self):
        self.current = None
        self.graphs = []
        self.capturing = None
        cuda = types.SimpleNamespace()
        cuda.ExternalStream = lambda ptr: types.SimpleNamespace(ptr=ptr)

        @contextlib.contextmanager
        def stream(s):
            prev, self.current = self.current, s
            try:
                yield
            finally:
                self.current = prev

        class CUDAGraph:
            def __init__(g):
                g.work = []
                g.replays = 0
                self.graphs.append(g)

            def replay(g):
                g.replays += 1
                for w in g.work:
                    w()

        @contextlib.contextmanager
        def graph(g, stream=None):
            with cuda.stream(stream):
                self.capturing = g
                try:
                    yield
                finally:
                    self.capturing = None

        cuda.stream, cuda.CUDAGraph, cuda.graph = stream, CUDAGraph, graph
        self.cuda = cuda

    def launch(self, work):
        if self.capturing is not None:
            self.capturing.work.append(work)
        else:
            work()


def test_torch_rows_are_captured_with_torch_graphs_on_the_timing_stream(fake_cupy, monkeypatch):
    torch = _FakeTorch()
    monkeypatch.setitem(sys.modules, "torch", torch)
    timer = bench.GpuTimer(fake_cupy)
    streams, done = [], []

    def fn():
        streams.append(torch.current.ptr if torch.current is not None else None)
        torch.launch(lambda: done.append(1))

    t = timer.measure(bench.Case("relu", "float32", "torch.relu", "8", "GB/s", 64.0, fn, vendor=True,
                                 torch=True), repeats=3)
    assert t.kernel_method == bench.KERNEL_TORCH_GRAPH and len(t.kernel_ms) == 3
    # every call ran with PyTorch's current stream being the timer's CuPy stream
    assert streams == [timer.stream.ptr] * (2 + 3 + 1)
    (graph,) = torch.graphs
    assert graph.replays == 3 and len(done) == 2 + 3 + 3   # the captured work ran at each replay only


# -- failures: rows, JSON, exit status ------------------------------------------------------------
def _gpu_args(path, *extra):
    return ["bench", "--repeats", "1", "--json", str(path), "--no-progress", *extra]


def _providers(monkeypatch, **providers):
    monkeypatch.setattr(bench, "COPY_BYTES", 1 << 12)
    monkeypatch.setattr(bench, "PROVIDERS", providers)


def test_a_case_that_raises_is_a_failed_row_and_the_run_goes_on(fake_cupy, monkeypatch, tmp_path, capsys):
    good, holder, host = _relu_case(fake_cupy)

    def broken():
        raise ZeroDivisionError("the kernel divided by zero")

    def provider(env):
        yield good
        yield bench.Case("relu", "float32", "broken", "7", "GB/s", 1.0, broken)
        yield bench.Case(**{**good.__dict__, "variant": "again"})

    _providers(monkeypatch, elementwise=provider)
    path = tmp_path / "r.json"
    assert cli.main(_gpu_args(path)) == 1
    out = capsys.readouterr()
    doc = json.loads(path.read_text())
    rows = doc["results"]
    assert [r["variant"] for r in rows] == ["relu_vec128", "broken", "again"]
    assert rows[1]["status"] == "failed"
    assert rows[1]["error"] == {"type": "ZeroDivisionError", "message": "the kernel divided by zero",
                                "stage": "timing"}
    assert "FAILED ZeroDivisionError: the kernel divided by zero" in out.out
    assert "1 failed, 0 wrong" in out.err
    for r in (rows[0], rows[2]):
        assert r["status"] == "ok" and r["kernel_median_ms"] > 0 and r["op_median_ms"] > 0
        assert r["kernel_method"] == bench.KERNEL_GRAPH


def test_a_check_that_raises_is_a_failed_row(fake_cupy, monkeypatch, tmp_path, capsys):
    good, _, _ = _relu_case(fake_cupy)

    def check():
        raise ValueError("no reference for this shape")

    _providers(monkeypatch, elementwise=lambda env: iter([bench.Case(**{**good.__dict__, "check": check})]))
    path = tmp_path / "r.json"
    assert cli.main(_gpu_args(path)) == 1
    (row,) = json.loads(path.read_text())["results"]
    assert row["status"] == "failed" and row["error"]["stage"] == "check"
    assert row["error"]["type"] == "ValueError" and row["kernel_median_ms"] > 0


def test_a_provider_that_raises_gives_a_failed_row_and_the_others_run(fake_cupy, monkeypatch, tmp_path, capsys):
    good, _, _ = _relu_case(fake_cupy)

    def provider(env):
        yield good
        raise RuntimeError("cannot make the inputs")

    _providers(monkeypatch, first=provider, second=lambda env: iter([bench.Case(**{**good.__dict__, "variant": "b"})]))
    path = tmp_path / "r.json"
    assert cli.main(_gpu_args(path)) == 1
    rows = json.loads(path.read_text())["results"]
    assert [(r["op"], r["variant"], r["status"]) for r in rows] == [
        ("first", "(making the cases)", "failed"), ("relu", "relu_vec128", "ok"), ("relu", "b", "ok")]
    assert rows[0]["error"]["message"] == "cannot make the inputs"


def test_an_interrupt_still_writes_what_was_measured(fake_cupy, monkeypatch, tmp_path, capsys):
    good, _, _ = _relu_case(fake_cupy)

    def interrupted(env):
        raise KeyboardInterrupt

    _providers(monkeypatch, first=lambda env: iter([good]), second=interrupted)
    path = tmp_path / "r.json"
    assert cli.main(_gpu_args(path)) == 130
    doc = json.loads(path.read_text())
    assert doc["meta"]["interrupted"] == "KeyboardInterrupt"
    assert [r["variant"] for r in doc["results"]] == ["relu_vec128"]
    assert doc["results"][0]["kernel_median_ms"] > 0


def test_an_unexpected_error_outside_the_cases_still_writes_the_json(fake_cupy, monkeypatch, tmp_path, capsys):
    def broken_timer(cupy):
        raise MemoryError("out of memory allocating the L2 flush buffer")

    monkeypatch.setattr(bench, "GpuTimer", broken_timer)
    path = tmp_path / "r.json"
    assert cli.main(_gpu_args(path)) == 1
    doc = json.loads(path.read_text())
    assert doc["meta"]["error"] == {"type": "MemoryError", "message": "out of memory allocating the L2 flush buffer"}
    assert doc["meta"]["backend"] == "cuda" and doc["results"] == []


def test_a_failed_copy_measurement_is_recorded_and_the_cases_run(fake_cupy, monkeypatch, tmp_path, capsys):
    def broken_copy(cupy, timer, repeats):
        raise MemoryError("out of memory allocating the copy buffers")

    good, _, _ = _relu_case(fake_cupy)
    _providers(monkeypatch, elementwise=lambda env: iter([good]))
    monkeypatch.setattr(bench, "copy_bandwidth", broken_copy)
    path = tmp_path / "r.json"
    assert cli.main(_gpu_args(path)) == 0
    doc = json.loads(path.read_text())
    assert doc["meta"]["copy_error"]["type"] == "MemoryError" and "copy" not in doc["meta"]
    (row,) = doc["results"]
    assert row["status"] == "ok" and "pct_copy" not in row
    assert "device-to-device copy FAILED: MemoryError" in capsys.readouterr().err


def test_sigterm_writes_the_json(tmp_path):
    """``timeout`` sends SIGTERM: the rows measured so far are written, exit status 143."""
    path = tmp_path / "r.json"
    script = f"""
import os, signal, sys
from pygpu_ops import bench, cli
from pygpu_ops._runtime import backends
backends._problems["cuda"] = "none here"
def provider(env):
    yield bench.Case("x", "float32", "fine", "1", "GB/s", 1.0, lambda: None)
    yield bench.Case("x", "float32", "killed", "1", "GB/s", 1.0, lambda: os.kill(os.getpid(), signal.SIGTERM))
    yield bench.Case("x", "float32", "never", "1", "GB/s", 1.0, lambda: None)
bench.PROVIDERS = {{"x": provider}}
sys.exit(cli.main(["bench", "--repeats", "1", "--no-progress", "--json", {str(path)!r}]))
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 143, proc.stderr
    doc = json.loads(path.read_text())
    assert doc["meta"]["interrupted"] == "SIGTERM"
    assert [r["variant"] for r in doc["results"]] == ["fine"]
    assert "interrupted (SIGTERM) after 1 rows" in proc.stderr


def test_plot_without_matplotlib_writes_the_json_and_says_why(monkeypatch, tmp_path, capsys):
    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)   # import matplotlib -> ImportError
    path, plots = tmp_path / "r.json", tmp_path / "plots"
    assert cli.main(["bench", "--ops", "gemm", "--sizes", "16", "--repeats", "1", "--no-progress",
                     "--json", str(path), "--plot", str(plots)]) == 0
    out = capsys.readouterr().out
    assert "--plot: no charts drawn, matplotlib is not importable" in out
    assert json.loads(path.read_text())["results"] and not plots.exists()
