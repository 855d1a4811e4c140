"""The digits CNN quantized by ``pygpu_ops.quantize_model``: float32 vs INT8 accuracy and time.

    python examples/quantize_digits.py [--backend numpy|emulator|cuda] [--method minmax|percentile]
                                       [--activation-dtype uint8|int8] [--write FILE.onnx] [--repeats 20]

``digits_cnn.onnx`` (built by ``digits_cnn_onnx.py``) is calibrated on the training images of the
split recorded with the weights (``digits_cnn.npz``), in batches of 200, and written in the QDQ
format. Both models then run through ``InferenceSession`` on the 360 held-out test images: the
script prints the per-layer error report, both accuracies, how often the predictions agree, whether
ONNX Runtime's run of the same QDQ file predicts the same (where onnxruntime is installed), and the
median time of one batch of all 360 images on the chosen backend. On ``numpy`` these are CPU times
of the NumPy fallbacks; the emulator's times measure the CPU emulating the kernels thread by thread
and say nothing about a GPU, so they are not printed. ``--write`` saves the QDQ model, for
``pygpu-ops bench --model FILE.onnx`` against ``pygpu-ops bench --model examples/digits_cnn.onnx``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
try:
    import pygpu_ops as po
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(HERE.parent))
    import pygpu_ops as po
sys.path.insert(0, str(HERE))
from digits_cnn import load_data, load_model  # noqa: E402  (the split recorded with the weights)

FLOAT_MODEL = HERE / "digits_cnn.onnx"
CALIBRATION_BATCH = 200


def quantize(method: str = "minmax", activation_dtype: str = "uint8", output_path=None) -> dict:
    """The QDQ model, its report and the test split: {"model", "report", "x_test", "y_test"}."""
    x_train, x_test, y_test = load_data(load_model())
    feeds = [{"x": x_train[i:i + CALIBRATION_BATCH]} for i in range(0, len(x_train), CALIBRATION_BATCH)]
    model, report = po.quantize_model(str(FLOAT_MODEL), feeds, method=method, activation_dtype=activation_dtype,
                                      output_path=output_path)
    return {"model": model, "report": report, "x_test": x_test, "y_test": y_test}


def predict(sess, x) -> np.ndarray:
    p = sess.run(None, {"x": x})[0]
    return np.asarray(p.get() if hasattr(p, "get") else p).argmax(axis=1)


def accuracy(sess, x, y) -> float:
    return float(np.mean(predict(sess, x) == y))


def median_ms(sess, x, repeats: int) -> float:
    sess.run(None, {"x": x})   # plans the input signature once, outside the timing
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = sess.run(None, {"x": x})[0]
        if hasattr(out, "get"):
            out.get()          # waits for the device
        times.append((time.perf_counter() - t0) * 1e3)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "emulator", "cuda"])
    ap.add_argument("--method", default="minmax", choices=["minmax", "percentile"])
    ap.add_argument("--activation-dtype", default="uint8", choices=["uint8", "int8"])
    ap.add_argument("--write", metavar="FILE.onnx", help="save the QDQ model there")
    ap.add_argument("--repeats", type=int, default=20)
    args = ap.parse_args(argv)

    res = quantize(args.method, args.activation_dtype, args.write)
    x, y = res["x_test"], res["y_test"]
    print(res["report"])
    if args.write:
        print(f"wrote {args.write}")
    xp = np
    if args.backend == "cuda":
        import cupy as xp
    xd = xp.asarray(x)
    fsess = po.InferenceSession(str(FLOAT_MODEL), backend=args.backend)
    qsess = po.InferenceSession(res["model"].SerializeToString(), backend=args.backend)
    fpred, qpred = predict(fsess, xd), predict(qsess, xd)
    facc, qacc = float(np.mean(fpred == y)), float(np.mean(qpred == y))
    print(f"\n{len(y)} test images, backend {args.backend!r}, calibration {args.method}, "
          f"{args.activation_dtype} activations, int8 per-channel weights")
    print(f"float32 accuracy {facc:.4f} ({int(np.sum(fpred == y))}/{len(y)}); "
          f"int8 accuracy {qacc:.4f} ({int(np.sum(qpred == y))}/{len(y)}); predictions agree on "
          f"{int(np.sum(fpred == qpred))}/{len(y)}")
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        opred = ort.InferenceSession(res["model"].SerializeToString(),
                                     providers=["CPUExecutionProvider"]).run(None, {"x": x})[0].argmax(axis=1)
        print(f"ONNX Runtime CPU on the same QDQ file: predictions equal ours on {int(np.sum(opred == qpred))}/{len(y)}")
    if args.backend == "emulator":
        print("times not shown: the emulator runs the kernels thread by thread on the CPU")
    else:
        label = "CPU, NumPy fallbacks" if args.backend == "numpy" else "GPU, wall clock synchronized"
        fms, qms = median_ms(fsess, xd, args.repeats), median_ms(qsess, xd, args.repeats)
        print(f"time per batch of {len(y)} ({label}, median of {args.repeats}): float32 {fms:.2f} ms, "
              f"int8 {qms:.2f} ms")
    return 0 if facc - qacc <= 0.01 else 1


if __name__ == "__main__":
    sys.exit(main())
