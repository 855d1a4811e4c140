"""examples/digits_cnn.onnx: the committed file is what build() writes from the trained weights, and
it reaches the recorded accuracy through InferenceSession, matching ONNX Runtime."""
from __future__ import annotations

import importlib
import sys
from pathlib import Path

import numpy as np
import pytest

from .helpers import ort_run

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _example():
    # examples/ is not a package: put it on the path for this one import
    sys.path.insert(0, str(EXAMPLES))
    try:
        return importlib.import_module("digits_cnn_onnx")
    finally:
        sys.path.remove(str(EXAMPLES))


def test_committed_file_is_built_from_the_weights():
    assert _example().build().SerializeToString() == (EXAMPLES / "digits_cnn.onnx").read_bytes()


def test_digits_onnx_accuracy(host_backend):
    pytest.importorskip("sklearn", reason="the digits data ship with scikit-learn")
    res = _example().run(backend=host_backend, verbose=False)
    assert res["n_test"] == 360
    assert res["accuracy"] == res["recorded_accuracy"]
    assert res["peak_bytes"] > 0


def test_digits_onnx_matches_ort(host_backend):
    import pygpu_ops as po

    x = np.random.default_rng(3).random((5, 1, 8, 8), dtype=np.float32)
    got = po.InferenceSession(str(EXAMPLES / "digits_cnn.onnx"), backend=host_backend).run(None, {"x": x})[0]
    want = ort_run(_example().build(), {"x": x})[0]
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)
