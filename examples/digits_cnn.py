"""A small CNN on scikit-learn's digits, run through pygpu_ops in float32 and in INT8.

    python examples/digits_cnn.py [--backend numpy|emulator|cuda] [--batch 120] [--limit N]

The weights come from ``examples/digits_cnn.npz`` (written by ``train_digits_cnn.py``, which
documents the network and the split). Both paths use only the public API on the chosen backend:

* float32: ``conv2d(..., padding=1, activation="relu")`` -> ``max_pool2d`` -> ``conv2d`` ->
  ``max_pool2d`` -> ``gemm`` (the fully connected layer, bias as ``c`` with ``beta=1``) ->
  ``softmax``.
* INT8 after post-training quantization: weights symmetric int8 per output channel
  (``quant_params(w, axis=0)``), activations uint8 per tensor, their scales and zero points
  calibrated (min / max, ``quant_params(..., symmetric=False, dtype="uint8")``) on the float32
  activations of the training images; biases int32 at scale ``s_in * s_w[o]``. ``quantize`` ->
  ``po.qconv2d(..., activation="relu")`` -> max pooling -> ``qconv2d`` -> max pooling ->
  ``int8_gemm`` + int32 bias -> ``dequantize`` -> ``softmax``. Max pooling of uint8 values with a
  positive scale is ``dequantize`` -> ``max_pool2d`` -> ``quantize`` with the same scale and zero
  point (exact: the maximum of dequantized values is a dequantized value, and it quantizes back
  to itself).

Calibration is a one-off host step and runs on the numpy backend whatever ``--backend`` says; the
timed passes run on the chosen backend. ``run(...)`` returns the numbers it prints.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

try:
    import pygpu_ops as po
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import pygpu_ops as po

WEIGHTS = Path(__file__).with_name("digits_cnn.npz")


def load_model(path=WEIGHTS) -> dict:
    with np.load(path) as f:
        return {k: f[k] for k in f.files}


def load_data(model: dict):
    """(x_train, x_test, y_test): the split recorded with the weights, images (N, 1, 8, 8) float32."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = (d.images.astype(np.float32) / np.float32(16))[:, None]
    test = np.zeros(len(x), bool)
    test[model["test_index"].astype(np.int64)] = True
    return x[~test], x[test], d.target[test]


# ---------------------------------------------------------------------------------------------
# float32
# ---------------------------------------------------------------------------------------------
def float_logits(m: dict, x, backend: str, taps: list = None):
    """The float32 network up to the logits; ``taps`` (a list) collects the post-ReLU activations."""
    h = po.conv2d(x, m["conv1_w"], m["conv1_b"], padding=1, activation="relu", backend=backend)
    if taps is not None:
        taps.append(h)
    h = po.max_pool2d(h, 2, backend=backend)
    h = po.conv2d(h, m["conv2_w"], m["conv2_b"], padding=1, activation="relu", backend=backend)
    if taps is not None:
        taps.append(h)
    h = po.max_pool2d(h, 2, backend=backend)
    h = h.reshape(h.shape[0], -1)
    return po.gemm(h, m["fc_w"], m["fc_b"][None, :], beta=1.0, trans_b=True, backend=backend)


def float_forward(m: dict, x, backend: str):
    """Class probabilities (N, 10), float32."""
    return po.softmax(float_logits(m, x, backend), axis=-1, backend=backend)


# ---------------------------------------------------------------------------------------------
# INT8
# ---------------------------------------------------------------------------------------------
def _bias_int32(b: np.ndarray, s_in, s_w) -> np.ndarray:
    """The float bias at scale s_in * s_w[o], rounded to nearest (ties to even), as int32."""
    q = np.rint(b.astype(np.float64) / (np.float64(s_in) * np.asarray(s_w, np.float64)))
    return np.clip(q, -2**31, 2**31 - 1).astype(np.int32)


def quantize_model(m: dict, x_train: np.ndarray) -> dict:
    """Post-training quantization: per-channel int8 weights, per-tensor uint8 activations
    calibrated on ``x_train`` (numpy backend; a host-side step)."""
    q = {}
    q["s0"], q["z0"] = po.quant_params(x_train, symmetric=False, dtype="uint8")
    taps = []
    logits = float_logits(m, x_train, "numpy", taps)
    (q["s1"], q["z1"]), (q["s2"], q["z2"]) = (po.quant_params(t, symmetric=False, dtype="uint8") for t in taps)
    del logits
    for name, s_in in (("conv1", q["s0"]), ("conv2", q["s1"])):
        w = m[f"{name}_w"]
        sw, _ = po.quant_params(w, axis=0)                   # symmetric int8 per output channel
        q[f"{name}_sw"] = sw
        q[f"{name}_w"] = po.quantize(w, sw, 0, axis=0)
        q[f"{name}_b"] = _bias_int32(m[f"{name}_b"], s_in, sw)
    sw, _ = po.quant_params(m["fc_w"], axis=0)               # per output unit (row of fc_w)
    q["fc_sw"] = sw
    q["fc_wt"] = np.ascontiguousarray(po.quantize(m["fc_w"], sw, 0, axis=0).T)   # (64, 10): b of int8_gemm
    q["fc_b"] = _bias_int32(m["fc_b"], q["s2"], sw)
    q["fc_scale"] = (q["s2"] * sw).astype(np.float32)         # the accumulator's scale per column
    return q


def _pool_q(h, scale, zp, backend):
    f = po.dequantize(h, scale, zp, backend=backend)
    return po.quantize(po.max_pool2d(f, 2, backend=backend), scale, zp, dtype="uint8", backend=backend)


def int8_forward(q: dict, x, backend: str):
    """Class probabilities (N, 10), float32, through the INT8 network."""
    xq = po.quantize(x, q["s0"], q["z0"], dtype="uint8", backend=backend)
    h = po.qconv2d(xq, q["s0"], q["z0"], q["conv1_w"], q["conv1_sw"], 0, q["s1"], q["z1"], q["conv1_b"],
                padding=1, activation="relu", backend=backend)
    h = _pool_q(h, q["s1"], q["z1"], backend)
    h = po.qconv2d(h, q["s1"], q["z1"], q["conv2_w"], q["conv2_sw"], 0, q["s2"], q["z2"], q["conv2_b"],
                padding=1, activation="relu", backend=backend)
    h = _pool_q(h, q["s2"], q["z2"], backend)
    acc = po.int8_gemm(h.reshape(h.shape[0], -1), q["fc_wt"], a_zero_point=q["z2"], backend=backend)
    acc += q["fc_b"]
    logits = po.dequantize(acc, q["fc_scale"], 0, axis=1, backend=backend)
    return po.softmax(logits, axis=-1, backend=backend)


# ---------------------------------------------------------------------------------------------
# The demo
# ---------------------------------------------------------------------------------------------
def _on_backend(d: dict, backend: str) -> dict:
    """Model arrays moved to the backend's array kind (CuPy for cuda); scalars stay host values."""
    if backend != "cuda":
        return d
    import cupy

    return {k: cupy.asarray(v) if isinstance(v, np.ndarray) and v.ndim > 0 else v for k, v in d.items()}


def _predict(forward, params, x, batch: int, backend: str):
    """(predictions, ms per batch): one untimed warm-up batch (kernel compiles / loads), then all."""
    xp = np
    if backend == "cuda":
        import cupy as xp
    sync = (lambda: xp.cuda.Device().synchronize()) if backend == "cuda" else (lambda: None)
    forward(params, xp.asarray(x[:batch]), backend)
    sync()
    preds = []
    t0 = time.perf_counter()
    for i in range(0, len(x), batch):
        preds.append(forward(params, xp.asarray(x[i:i + batch]), backend).argmax(axis=1))
    sync()
    ms = (time.perf_counter() - t0) * 1e3 / max(1, -(-len(x) // batch))
    preds = [p.get() if hasattr(p, "get") else np.asarray(p) for p in preds]
    return np.concatenate(preds), ms


def run(backend: str = "numpy", batch: int = 120, limit: int = None, weights=WEIGHTS, verbose: bool = True) -> dict:
    """Evaluate the float32 and INT8 networks on the recorded test split (its first ``limit``
    images if given) on ``backend``; print and return accuracies, agreement and ms per batch."""
    if batch < 1:
        raise ValueError(f"batch must be >= 1; got {batch}")
    m = load_model(weights)
    x_train, x_test, y_test = load_data(m)
    if limit is not None:
        x_test, y_test = x_test[:limit], y_test[:limit]
    q = quantize_model(m, x_train)
    pf, ms_f = _predict(float_forward, _on_backend(m, backend), x_test, batch, backend)
    pq, ms_q = _predict(int8_forward, _on_backend(q, backend), x_test, batch, backend)
    res = {
        "backend": backend, "n_test": len(y_test), "batch": batch,
        "recorded_float32_accuracy": float(m["test_accuracy"]),
        "float32_accuracy": float(np.mean(pf == y_test)), "int8_accuracy": float(np.mean(pq == y_test)),
        "agreement": float(np.mean(pf == pq)), "float32_ms_per_batch": ms_f, "int8_ms_per_batch": ms_q,
    }
    if verbose:
        n = res["n_test"]
        print(f"digits CNN on backend {backend!r}: {n} test images in batches of {batch}")
        print(f"  float32  accuracy {res['float32_accuracy']:.4f} ({int(np.sum(pf == y_test))}/{n})  "
              f"{ms_f:8.2f} ms/batch   (training script recorded {res['recorded_float32_accuracy']:.4f} on all "
              f"{len(m['test_index'])})")
        print(f"  int8     accuracy {res['int8_accuracy']:.4f} ({int(np.sum(pq == y_test))}/{n})  "
              f"{ms_q:8.2f} ms/batch")
        print(f"  agreement float32 vs int8: {res['agreement']:.4f} of predictions equal")
        if backend == "emulator":
            print("  (emulator times are CPU emulation of the kernels, not GPU performance)")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=("numpy", "emulator", "cuda"))
    ap.add_argument("--batch", type=int, default=120)
    ap.add_argument("--limit", type=int, default=None, help="evaluate only the first LIMIT test images")
    args = ap.parse_args(argv)
    run(args.backend, args.batch, args.limit)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
