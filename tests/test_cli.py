"""The pygpu-ops command on the CPU: parsing, info, the no-GPU bench path, selftest's exit code."""
from __future__ import annotations

import json

import numpy as np
import pytest

from pygpu_ops import cli, selftest
from pygpu_ops._runtime import backends


def test_info(capsys):
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    assert "pygpu_ops" in out and "backend   numpy     available" in out


def test_bench_without_gpu_says_so_first(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    path = tmp_path / "r.json"
    assert cli.main(["bench", "--quick", "--sizes", "64", "--repeats", "2", "--json", str(path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("pygpu-ops bench: no GPU here")
    doc = json.loads(path.read_text())
    assert doc["meta"]["backend"] == "numpy"
    assert {r["variant"] for r in doc["results"]} == {"numpy.matmul", "pygpu_ops numpy backend"}
    assert all(r["gflops"] > 0 and r["repeats"] == 2 for r in doc["results"])


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
