"""``pygpu-ops run MODEL.onnx`` and ``pygpu-ops bench --model``: feeds, --compare-ort, --profile,
--output-dir, the errors (exit status 2) and the bench's model rows. The references are ONNX
Runtime on the same feed and NumPy arithmetic written here."""
from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import helper, model, ort_run, rand

from pygpu_ops import cli
from pygpu_ops._runtime import backends
from pygpu_ops.ir import run as run_mod

mk = helper.make_node
ROOT = Path(__file__).resolve().parents[2]
DIGITS = str(ROOT / "examples" / "digits_cnn.onnx")
DIGITS_NODES = ["conv1", "relu1", "pool1", "conv2", "relu2", "pool2", "flatten", "fc", "softmax"]


def _cli(capsys, *argv):
    rc = cli.main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def _two_input_model(tmp_path):
    """y = x * s + b: x (B, 3) float32, s (B, 1) float32, b an initializer; z = Relu(y)."""
    nodes = [mk("Mul", ["x", "s"], ["m"], name="mul"), mk("Add", ["m", "b"], ["y"], name="add"),
             mk("Relu", ["y"], ["z"], name="relu")]
    m = model(nodes, {"x": rand(2, 3), "s": rand(2, 1)}, {"y": 2, "z": 2}, {"b": rand(3, seed=3)},
              input_shapes={"x": ["B", 3], "s": ["B", 1]})
    path = tmp_path / "tiny.onnx"
    path.write_bytes(m.SerializeToString())
    return m, str(path)


def test_run_digits_from_file(capsys, tmp_path, host_backend):
    x = rand(3, 1, 8, 8, seed=11)
    np.save(tmp_path / "x.npy", x)
    rc, out, err = _cli(capsys, "run", DIGITS, "--backend", host_backend, "--input", f"x={tmp_path / 'x.npy'}",
                        "--compare-ort", "--output-dir", str(tmp_path / "out"))
    assert rc == 0, err
    want = ort_run(__import__("onnx").load(DIGITS), {"x": x})[0]
    got = np.load(tmp_path / "out" / "probs.npy")
    assert got.shape == (3, 10) and got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
    assert "input  x: shape (3, 1, 8, 8) float32" in out and "(from file)" in out
    line = re.search(r"probs: max abs (\S+), max rel (\S+)\s+ok", out)
    assert line, out
    max_abs = float(line.group(1))
    assert max_abs == pytest.approx(float(np.abs(got.astype(np.float64) - want).max()), rel=0.01, abs=1e-12)
    assert float(line.group(2)) <= 1e-4


def test_random_inputs_and_dims(capsys, tmp_path):
    m, path = _two_input_model(tmp_path)
    rc, out, err = _cli(capsys, "run", path, "--dim", "B=4", "--seed", "7", "--output-dir", str(tmp_path),
                        "--compare-ort")
    assert rc == 0, err
    y, z = np.load(tmp_path / "y.npy"), np.load(tmp_path / "z.npy")
    assert y.shape == (4, 3) and z.shape == (4, 3)
    np.testing.assert_array_equal(z, np.maximum(y, 0))
    assert out.count("(random)") == 2
    # the same seed gives the same feed, another seed another one
    sess = __import__("pygpu_ops").InferenceSession(path, backend="numpy")
    f7, f7b, f8 = (run_mod.random_feed(sess, {"B": 4}, seed=s) for s in (7, 7, 8))
    assert f7["x"].shape == (4, 3) and f7["s"].shape == (4, 1) and f7["x"].dtype == np.float32
    np.testing.assert_array_equal(f7["x"], f7b["x"])
    assert not np.array_equal(f7["x"], f8["x"])
    want = ort_run(m, f7)
    np.testing.assert_allclose(y, want[0], rtol=1e-6, atol=1e-7)
    # default: symbolic dimensions are 1
    assert run_mod.random_feed(sess)["x"].shape == (1, 3)


def test_random_integer_and_bool_inputs():
    """random_feed reads only the graph's inputs: an int64 and a bool input (which the session
    itself may refuse to compute on) get integers in [0, 10) and booleans."""
    from types import SimpleNamespace

    from pygpu_ops.ir import onnx_import

    nodes = [mk("Identity", ["i"], ["j"], name="id1"), mk("Identity", ["b"], ["c"], name="id2")]
    m = model(nodes, {"i": np.zeros((2, 5), np.int64), "b": np.zeros((3,), np.bool_)},
              {"j": (2, np.int64), "c": (1, np.bool_)}, input_shapes={"i": ["K", 500]})
    fake_sess = SimpleNamespace(graph=onnx_import.to_graph(onnx_import.load(m)))
    feed = run_mod.random_feed(fake_sess, {"K": 2}, seed=1)
    assert feed["i"].dtype == np.int64 and feed["i"].shape == (2, 500)
    assert feed["i"].min() == 0 and feed["i"].max() == 9
    assert feed["b"].dtype == np.bool_ and feed["b"].shape == (3,)


def test_profile(capsys, tmp_path):
    # the graph as written (the passes would fuse each Conv + Relu: checked at the end)
    rc, out, err = _cli(capsys, "run", DIGITS, "--profile", "--repeats", "2", "--dim", "N=2",
                        "--no-optimize")
    assert rc == 0, err
    assert "wall time per node on this CPU (numpy backend)" in out
    node_part = out.split("per node, slowest first:")[1].split("per op type:")[0]
    rows = [l.split() for l in node_part.strip().splitlines()[1:]]
    assert sorted(r[0] for r in rows) == sorted(DIGITS_NODES)
    ms = [float(r[-2]) for r in rows]
    assert ms == sorted(ms, reverse=True)
    assert sum(float(r[-1]) for r in rows) == pytest.approx(100.0, abs=0.1 * len(rows))
    type_rows = [l.split() for l in out.split("per op type:")[1].strip().splitlines()[1:]]
    counts = {r[0]: int(r[1]) for r in type_rows}
    assert counts == {"Conv": 2, "Relu": 2, "MaxPool": 2, "Flatten": 1, "Gemm": 1, "Softmax": 1}
    per_node = {}
    for r in rows:
        per_node.setdefault(r[1], 0.0)
        per_node[r[1]] += float(r[-2])
    for r in type_rows:   # an op type's total is the sum of its nodes (each printed to 3 decimals)
        assert float(r[2]) == pytest.approx(per_node[r[0]], abs=1e-3 * (counts[r[0]] + 1))
    tms = [float(r[2]) for r in type_rows]
    assert tms == sorted(tms, reverse=True)
    rc, out, err = _cli(capsys, "run", DIGITS, "--profile", "--repeats", "1", "--dim", "N=2")
    assert rc == 0, err
    type_rows = [l.split() for l in out.split("per op type:")[1].strip().splitlines()[1:]]
    counts = {r[0]: int(r[1]) for r in type_rows}
    assert counts == {"FusedConv": 2, "MaxPool": 2, "Flatten": 1, "Gemm": 1, "Softmax": 1}


def test_profile_restores_the_plan_and_labels_the_emulator():
    pytest.importorskip("onnx")
    if backends.problem("emulator") is not None:
        pytest.skip(f"emulator unavailable: {backends.problem('emulator')}")
    import pygpu_ops as po

    sess = po.InferenceSession(DIGITS, backend="emulator")
    feed = {"x": rand(2, 1, 8, 8, seed=4)}
    prof = run_mod.profile(sess, feed, repeats=1)
    assert "emulate" in prof["clock"] and "not a GPU time" in prof["clock"]
    assert len(prof["nodes"]) == len(sess.last_plan.steps)
    assert all(n["median_ms"] > 0 for n in prof["nodes"] if n["op_type"] != "Flatten")
    assert not any(getattr(s.run, "__name__", "") == "timed" for s in sess.last_plan.steps)


def test_profile_plot(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    rc, out, err = _cli(capsys, "run", DIGITS, "--profile", "--repeats", "1", "--plot", str(tmp_path))
    assert rc == 0, err
    png = tmp_path / "profile_digits_cnn.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_compare_ort_measures_differences(tmp_path):
    m, path = _two_input_model(tmp_path)
    feed = {"x": rand(3, 3, seed=1), "s": rand(3, 1, seed=2)}
    y, z = ort_run(m, feed)
    rows = run_mod.compare_ort(path, feed, ["y", "z"], [y + np.float32(0.25), z[:2]])
    assert rows[0]["shape_ok"] and rows[0]["max_abs"] == pytest.approx(0.25, rel=1e-5)
    assert rows[0]["max_rel"] == pytest.approx(0.25 / float(np.abs(y).max()), rel=1e-5)
    assert not rows[1]["shape_ok"] and rows[1]["max_abs"] is None


def test_compare_ort_exit_status(capsys, monkeypatch):
    def far(path, feed, names, got):
        return [{"name": "probs", "shape": (1, 10), "ort_shape": (1, 10), "shape_ok": True,
                 "max_abs": 1e-2, "max_rel": 1e-2}]

    monkeypatch.setattr(run_mod, "compare_ort", far)
    rc, out, _ = _cli(capsys, "run", DIGITS, "--compare-ort")
    assert rc == 1 and "ABOVE TOLERANCE" in out
    rc, out, _ = _cli(capsys, "run", DIGITS, "--compare-ort", "--rtol", "0.1")
    assert rc == 0 and "ABOVE TOLERANCE" not in out


def test_compare_ort_without_onnxruntime(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)     # import onnxruntime -> ImportError
    rc, out, _ = _cli(capsys, "run", DIGITS, "--compare-ort")
    assert rc == 0 and "onnxruntime is not installed" in out


@pytest.mark.parametrize("argv, message", [
    (["missing.onnx"], "no such file 'missing.onnx'"),
    ([DIGITS, "--input", "x=/no/such.npy"], "--input x=/no/such.npy: no such file"),
    ([DIGITS, "--input", "y=a.npy"], "'y' is not an input of the model"),
    ([DIGITS, "--input", "x"], "expected NAME=VALUE"),
    ([DIGITS, "--dim", "M=2"], "--dim M: not a symbolic dimension"),
    ([DIGITS, "--dim", "N=two"], "--dim N=two: the value must be an integer"),
    ([DIGITS, "--plot", "somewhere"], "give --profile too"),
    ([DIGITS, "--profile", "--repeats", "0"], "--repeats must be >= 1"),
])
def test_errors_exit_2(capsys, argv, message):
    rc, out, err = _cli(capsys, "run", *argv)
    assert rc == 2 and message in err and err.startswith("pygpu-ops run: ")


def test_bad_feed_and_bad_file_exit_2(capsys, tmp_path):
    np.save(tmp_path / "x.npy", np.zeros((2, 1, 8, 9), np.float32))
    rc, _, err = _cli(capsys, "run", DIGITS, "--input", f"x={tmp_path / 'x.npy'}")
    assert rc == 2 and "input 'x'" in err and "dimension 3 must be 8" in err
    np.save(tmp_path / "xd.npy", np.zeros((2, 1, 8, 8), np.float64))
    rc, _, err = _cli(capsys, "run", DIGITS, "--input", f"x={tmp_path / 'xd.npy'}")
    assert rc == 2 and "dtype float64" in err
    (tmp_path / "text.npy").write_text("not numpy")
    rc, _, err = _cli(capsys, "run", DIGITS, "--input", f"x={tmp_path / 'text.npy'}")
    assert rc == 2 and "not a .npy array file" in err
    (tmp_path / "bad.onnx").write_bytes(b"\x00garbage")
    rc, _, err = _cli(capsys, "run", str(tmp_path / "bad.onnx"))
    assert rc == 2 and "is not an ONNX model" in err


def test_unsupported_op_exit_2(capsys, tmp_path):
    m = model([mk("Erf", ["x"], ["y"], name="erf1")], {"x": rand(2, 3)}, {"y": 2})
    (tmp_path / "erf.onnx").write_bytes(m.SerializeToString())
    rc, _, err = _cli(capsys, "run", str(tmp_path / "erf.onnx"))
    assert rc == 2 and "Erf" in err and "erf1" in err


def test_python_m_run():
    r = subprocess.run([sys.executable, "-m", "pygpu_ops", "run", DIGITS, "--compare-ort"], cwd=ROOT,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "output probs: shape (1, 10) float32" in r.stdout and "max rel" in r.stdout


# ---------------------------------------------------------------------------------------------
# bench --model
# ---------------------------------------------------------------------------------------------
def test_bench_model(capsys, tmp_path):
    pytest.importorskip("onnxruntime")
    out_json = tmp_path / "b.json"
    rc, out, err = _cli(capsys, "bench", "--model", DIGITS, "--dim", "N=8", "--repeats", "2", "--no-progress",
                        "--json", str(out_json))
    assert rc == 0, err
    doc = json.loads(out_json.read_text())
    rows = doc["results"]
    assert [r["op"] for r in rows] == ["model", "model"] and "analysis" not in doc
    vendor, ours = rows
    assert vendor["vendor"] and not ours["vendor"] and vendor["group"] == ours["group"]
    assert ours["size"] == "digits_cnn 8x1x8x8" and ours["unit"] == "items/s"
    assert ours["correct"] is True and ours["error_ratio"] < 1.0
    for r in rows:   # items/s = batch / median ms * 1000
        assert r["value"] == pytest.approx(8 / r["op_median_ms"] * 1e3, rel=1e-9)
        assert r["value_from"] == "op"
    assert ours["pct_vendor"] == pytest.approx(100 * vendor["op_median_ms"] / ours["op_median_ms"], rel=1e-9)
    if backends.problem("cuda") is not None:
        assert vendor["variant"] == "onnxruntime CPU EP"
        assert ours["variant"] == "InferenceSession (numpy backend)"
        assert "no GPU here" in out and "ONNX Runtime's CPU provider" in out


def test_bench_model_without_onnxruntime(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "onnxruntime", None)
    rc, out, err = _cli(capsys, "bench", "--model", DIGITS, "--repeats", "1", "--no-progress")
    assert rc == 1
    assert "InferenceSession" in out and "onnxruntime is not installed" in out + err


@pytest.mark.parametrize("argv, message", [
    (["--model", "missing.onnx"], "--model missing.onnx: no such file"),
    (["--model", DIGITS, "--ops", "gemm"], "--model times the model alone"),
    (["--dim", "N=2"], "--dim is for --model"),
    (["--model", DIGITS, "--dim", "N=x"], "--dim N=x: the value must be an integer"),
])
def test_bench_model_errors(capsys, argv, message):
    rc, out, err = _cli(capsys, "bench", *argv)
    assert rc == 2 and message in err


# ---------------------------------------------------------------------------------------------
# examples/export_torchvision.py, the parts that need no PyTorch
# ---------------------------------------------------------------------------------------------
def _export_example():
    import importlib

    sys.path.insert(0, str(ROOT / "examples"))
    try:
        return importlib.import_module("export_torchvision")
    finally:
        sys.path.remove(str(ROOT / "examples"))


def test_export_torchvision_without_torch(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)     # import torch -> ImportError
    assert _export_example().main(["--model", "resnet18"]) == 2
    assert "needs PyTorch" in capsys.readouterr().err


def test_export_torchvision_compare_model(capsys):
    pytest.importorskip("onnxruntime")
    ex = _export_example()
    x = rand(2, 1, 8, 8, seed=21)
    want = ort_run(__import__("onnx").load(DIGITS), {"x": x})[0]
    assert ex.compare_model(DIGITS, x, "numpy", 1e-4, torch_out=want)
    out = capsys.readouterr().out
    assert "vs ONNX Runtime CPU" in out and "vs PyTorch" in out and "ABOVE" not in out
    assert not ex.compare_model(DIGITS, x, "numpy", 1e-4, torch_out=want + np.float32(0.01))
    assert "vs PyTorch:          max abs 0.01" in capsys.readouterr().out


def test_torchvision_nets_match_torchvision_parameter_counts():
    # torchvision's documented sizes: ResNet-18 11,689,512 parameters, MobileNet V2 3,504,872.
    torch = pytest.importorskip("torch")
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import torchvision_nets
    finally:
        sys.path.remove(str(ROOT / "examples"))
    for name, count, first, last in (("resnet18", 11_689_512, "conv1.weight", "fc.bias"),
                                     ("mobilenet_v2", 3_504_872, "features.0.0.weight", "classifier.1.bias")):
        sd = torchvision_nets.build(torch, name).state_dict()
        assert sum(v.numel() for k, v in sd.items() if "running" not in k and "num_batches" not in k) == count
        keys = list(sd)
        assert keys[0] == first and keys[-1] == last


def test_export_torchvision_end_to_end(tmp_path, capsys):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    ex = _export_example()
    assert ex.main(["--model", "resnet18", "--size", "32", "--out-dir", str(tmp_path), "--repeat", "1"]) == 0
    out = capsys.readouterr().out
    assert (tmp_path / "resnet18.onnx").is_file()
    assert "vs PyTorch" in out and "vs ONNX Runtime CPU" in out and "ABOVE" not in out
    assert "x PyTorch" in out
