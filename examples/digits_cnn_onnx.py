"""The digits CNN as an ONNX model, run through ``pygpu_ops.InferenceSession``.

    python examples/digits_cnn_onnx.py [--backend numpy|emulator|cuda] [--write]

``build(weights)`` writes the network of ``digits_cnn.py`` as an ONNX graph with ``onnx.helper``
from the trained weights in ``digits_cnn.npz``: Conv(pads 1) -> Relu -> MaxPool 2 -> Conv(pads 1)
-> Relu -> MaxPool 2 -> Flatten -> Gemm(transB, bias C) -> Softmax(axis 1), input ``x`` of shape
(N, 1, 8, 8) with a symbolic batch N, opset 13. ``digits_cnn.onnx`` next to this file is its output
(``--write`` regenerates it). ``run`` evaluates the file on the recorded test split and reports the
accuracy, which must equal the one ``train_digits_cnn.py`` recorded.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

try:
    import pygpu_ops as po
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import pygpu_ops as po

HERE = Path(__file__).resolve().parent
WEIGHTS = HERE / "digits_cnn.npz"
MODEL = HERE / "digits_cnn.onnx"


def build(weights=WEIGHTS):
    """The ONNX ModelProto of the float32 digits CNN."""
    from onnx import TensorProto, helper, numpy_helper

    with np.load(weights) as f:
        w = {k: f[k] for k in ("conv1_w", "conv1_b", "conv2_w", "conv2_b", "fc_w", "fc_b")}
    mk = helper.make_node
    nodes = [
        mk("Conv", ["x", "conv1_w", "conv1_b"], ["c1"], pads=[1, 1, 1, 1], name="conv1"),
        mk("Relu", ["c1"], ["r1"], name="relu1"),
        mk("MaxPool", ["r1"], ["p1"], kernel_shape=[2, 2], strides=[2, 2], name="pool1"),
        mk("Conv", ["p1", "conv2_w", "conv2_b"], ["c2"], pads=[1, 1, 1, 1], name="conv2"),
        mk("Relu", ["c2"], ["r2"], name="relu2"),
        mk("MaxPool", ["r2"], ["p2"], kernel_shape=[2, 2], strides=[2, 2], name="pool2"),
        mk("Flatten", ["p2"], ["flat"], axis=1, name="flatten"),
        mk("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], transB=1, name="fc"),
        mk("Softmax", ["logits"], ["probs"], axis=1, name="softmax"),
    ]
    graph = helper.make_graph(
        nodes, "digits_cnn",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 1, 8, 8])],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["N", 10])],
        [numpy_helper.from_array(v.astype(np.float32), k) for k, v in w.items()])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="pygpu_ops")
    model.ir_version = 8     # readable by onnxruntime releases that lag the newest IR version
    return model


def run(backend: str = "numpy", model=MODEL, batch: int = 120, verbose: bool = True) -> dict:
    """Accuracy of the ONNX file on the recorded test split, run by InferenceSession on ``backend``."""
    from sklearn.datasets import load_digits

    with np.load(WEIGHTS) as f:
        test_index, recorded = f["test_index"].astype(np.int64), float(f["test_accuracy"])
    d = load_digits()
    x = (d.images.astype(np.float32) / np.float32(16))[:, None][test_index]
    y = d.target[test_index]
    sess = po.InferenceSession(str(model), backend=backend)
    xp = np
    if backend == "cuda":
        import cupy as xp
    preds = []
    for i in range(0, len(x), batch):
        p = sess.run(["probs"], {"x": xp.asarray(x[i:i + batch])})[0].argmax(axis=1)
        preds.append(p.get() if hasattr(p, "get") else np.asarray(p))
    acc = float(np.mean(np.concatenate(preds) == y))
    res = {"backend": backend, "n_test": len(y), "accuracy": acc, "recorded_accuracy": recorded,
           "peak_bytes": sess.last_plan.peak_bytes}
    if verbose:
        print(sess.graph)
        print(f"digits_cnn.onnx on backend {backend!r}: accuracy {acc:.4f} on {len(y)} test images "
              f"(recorded {recorded:.4f}); peak intermediates {res['peak_bytes']} bytes per batch of {batch}")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "emulator", "cuda"])
    ap.add_argument("--write", action="store_true", help=f"regenerate {MODEL.name} from {WEIGHTS.name} first")
    args = ap.parse_args(argv)
    if args.write:
        MODEL.write_bytes(build().SerializeToString())
        print(f"wrote {MODEL}")
    res = run(args.backend)
    return 0 if abs(res["accuracy"] - res["recorded_accuracy"]) <= 1e-9 else 1


if __name__ == "__main__":
    sys.exit(main())
