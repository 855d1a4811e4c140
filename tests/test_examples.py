"""examples/digits_cnn.py: the digits CNN through the public API, float32 and INT8, per backend.

The float32 accuracy must be exactly the one ``examples/train_digits_cnn.py`` recorded in the
``.npz`` (same weights, same test split), and the INT8 network after post-training quantization
must stay within one point of it. Needs scikit-learn (the digits data ship with it).
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from pygpu_ops._runtime import backends

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def _demo():
    spec = importlib.util.spec_from_file_location("digits_cnn_demo", EXAMPLES / "digits_cnn.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_weights_file_is_small_and_complete():
    with np.load(EXAMPLES / "digits_cnn.npz") as f:
        keys = set(f.files)
        assert {"conv1_w", "conv1_b", "conv2_w", "conv2_b", "fc_w", "fc_b", "test_accuracy", "split_seed",
                "test_index"} <= keys
        assert f["conv1_w"].shape == (8, 1, 3, 3) and f["conv2_w"].shape == (16, 8, 3, 3)
        assert f["fc_w"].shape == (10, 64) and f["conv1_w"].dtype == np.float32
        assert float(f["test_accuracy"]) >= 0.95 and len(f["test_index"]) == 360
    assert (EXAMPLES / "digits_cnn.npz").stat().st_size < 64 * 1024


@pytest.mark.parametrize("backend", ["numpy", pytest.param("emulator", marks=pytest.mark.emulator),
                                     pytest.param("cuda", marks=pytest.mark.gpu)])
def test_digits_cnn_float32_and_int8(backend, capsys):
    # the digits data ship with scikit-learn, a test extra: skipped, saying so, where it is missing
    pytest.importorskip("sklearn")

    why = backends.problem(backend)
    if why is not None:
        pytest.skip(f"backend {backend!r} unavailable: {why}")
    res = _demo().run(backend=backend, batch=120)
    out = capsys.readouterr().out
    assert f"backend {backend!r}" in out and "agreement" in out and "ms/batch" in out
    assert res["n_test"] == 360
    assert abs(res["float32_accuracy"] - res["recorded_float32_accuracy"]) <= 1e-9
    assert abs(res["int8_accuracy"] - res["float32_accuracy"]) <= 0.01
    assert res["agreement"] >= 0.97
    assert res["float32_ms_per_batch"] > 0 and res["int8_ms_per_batch"] > 0


def test_digits_cnn_cli(capsys):
    pytest.importorskip("sklearn")
    assert _demo().main(["--backend", "numpy", "--limit", "50", "--batch", "16"]) == 0
    out = capsys.readouterr().out
    assert "50 test images in batches of 16" in out and "int8     accuracy" in out
