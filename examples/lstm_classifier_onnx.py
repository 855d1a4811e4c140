"""A small LSTM text classifier as an ONNX model, run through ``pygpu_ops.InferenceSession``.

    python examples/lstm_classifier_onnx.py [--backend numpy|emulator|cuda] [--train]

The task is synthetic and generated here from a seed (no download): a "sentence" is a sequence of
token ids from a vocabulary of ``VOCAB`` words; ``CLASSES`` of the words are keywords, each
belonging to one of ``CLASSES`` topics (``KEYWORDS_PER_CLASS`` words per topic), the rest are
filler. The label is the topic whose keywords occur most often in the sentence (the counts are
drawn so the winner is unique, and its keywords are spread anywhere in the sentence), so the
network has to count over the whole sequence rather than look at one position.

The network: token ids (N, S) -> Embedding(VOCAB, EMBED) -> LSTM(EMBED, HIDDEN) -> the last hidden
state h_n -> Linear(HIDDEN, CLASSES) -> logits (N, CLASSES). With ``--train`` it is trained with
PyTorch (seeded, Adam, 400 batches of 64 sentences of random length in ``TRAIN_LENGTHS``; a few
seconds on two CPU cores, and the same file byte for byte each time) and exported with
``torch.onnx.export(dynamo=False)`` at opset 13 with a dynamic batch and sequence length to
``lstm_classifier.onnx`` next to this file (30 kB). The exporter writes Gather (the embedding),
Transpose (batch first -> time major), LSTM, Gather (h_n[0]) and Gemm, plus a shape subgraph
``Shape -> Gather -> Unsqueeze -> Concat -> ConstantOfShape`` for the zero initial states, which
the session evaluates on the host when it plans. Without ``--train`` the committed file is used
and PyTorch is not needed.

The held-out test set is ``test_set()``: ``TEST_PER_LENGTH`` sentences at each length of
``TEST_LENGTHS`` (the longest is past every training length), from ``TEST_SEED``. The script runs
the .onnx file on it through ``InferenceSession`` (``--backend``, numpy by default) and through
ONNX Runtime's CPU provider and prints both accuracies and the largest difference of the logits.
``TEST_ACCURACY`` is the accuracy the committed model scores (also stored in the file's metadata
as ``test_accuracy``); ``tests/ir/test_lstm_classifier.py`` checks the session reproduces it.
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

HERE = Path(__file__).resolve().parent
MODEL = HERE / "lstm_classifier.onnx"

VOCAB = 40                      # token ids 0 .. VOCAB-1
CLASSES = 4
KEYWORDS_PER_CLASS = 2          # topic k owns the tokens KEYWORD_BASE + k*KEYWORDS_PER_CLASS + j
KEYWORD_BASE = VOCAB - CLASSES * KEYWORDS_PER_CLASS
EMBED, HIDDEN = 16, 32
TRAIN_LENGTHS = (8, 32)         # inclusive range of training sentence lengths
TRAIN_SEED, TEST_SEED = 0, 1
TEST_LENGTHS = (10, 30, 60)
TEST_PER_LENGTH = 200
#: Accuracy of the committed lstm_classifier.onnx on test_set(): 587 of 600 sentences right (the
#: same with PyTorch, ONNX Runtime and InferenceSession); --train prints it.
TEST_ACCURACY = 587 / 600


def make_batch(rng: np.random.Generator, n: int, length: int):
    """``n`` sentences of ``length`` tokens: (ids (n, length) int64, labels (n,) int64)."""
    if length < 3:
        raise ValueError(f"length must be at least 3 (room for a unique winner), got {length}")
    labels = rng.integers(0, CLASSES, size=n)
    ids = rng.integers(0, KEYWORD_BASE, size=(n, length))           # filler everywhere first
    budget = length // 3                                             # keywords take at most a third
    for b in range(n):
        # the losers get 0 .. budget//2 occurrences each, the winner exactly one more than the best
        # loser (so a near tie is common): at most 2*budget + 1 <= length keywords for length >= 3
        counts = rng.integers(0, budget // 2 + 1, size=CLASSES)
        counts[labels[b]] = 0
        counts[labels[b]] = counts.max() + 1
        pos = rng.permutation(length)[:counts.sum()]
        topic = np.repeat(np.arange(CLASSES), counts)
        ids[b, pos] = KEYWORD_BASE + topic * KEYWORDS_PER_CLASS + rng.integers(0, KEYWORDS_PER_CLASS, size=len(pos))
    return ids.astype(np.int64), labels.astype(np.int64)


def test_set(seed: int = TEST_SEED):
    """The held-out set: a list of (ids (TEST_PER_LENGTH, S), labels) for each S in TEST_LENGTHS."""
    rng = np.random.default_rng(seed)
    return [make_batch(rng, TEST_PER_LENGTH, s) for s in TEST_LENGTHS]


def train(steps: int = 400, batch: int = 64, seed: int = TRAIN_SEED, path=MODEL, verbose: bool = True) -> float:
    """Trains the network with PyTorch, exports it to ``path`` and returns its test accuracy (PyTorch's)."""
    try:
        import torch
    except ImportError as e:
        raise SystemExit("--train needs PyTorch (pip install torch); without it the committed "
                         f"{MODEL.name} is evaluated") from e
    import onnx

    torch.manual_seed(seed)
    torch.set_num_threads(2)

    class Classifier(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(VOCAB, EMBED)
            self.lstm = torch.nn.LSTM(EMBED, HIDDEN, batch_first=True)
            self.fc = torch.nn.Linear(HIDDEN, CLASSES)

        def forward(self, ids):
            _, (h, _) = self.lstm(self.embed(ids))
            return self.fc(h[0])

    net = Classifier()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    for step in range(steps):
        ids, labels = make_batch(rng, batch, int(rng.integers(TRAIN_LENGTHS[0], TRAIN_LENGTHS[1] + 1)))
        loss = torch.nn.functional.cross_entropy(net(torch.from_numpy(ids)), torch.from_numpy(labels))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if verbose and (step + 1) % 100 == 0:
            print(f"step {step + 1}: loss {loss.item():.4f} ({time.perf_counter() - t0:.1f} s)")
    net.eval()
    with torch.no_grad():
        correct = sum(int((net(torch.from_numpy(ids)).argmax(1).numpy() == y).sum()) for ids, y in test_set())
    acc = correct / (len(TEST_LENGTHS) * TEST_PER_LENGTH)
    example = torch.from_numpy(make_batch(np.random.default_rng(0), 2, 5)[0])
    torch.onnx.export(net, (example,), str(path), dynamo=False, opset_version=13,
                      input_names=["ids"], output_names=["logits"],
                      dynamic_axes={"ids": {0: "N", 1: "S"}, "logits": {0: "N"}})
    model = onnx.load(str(path))
    onnx.helper.set_model_props(model, {"test_accuracy": repr(acc)})
    onnx.save(model, str(path))
    if verbose:
        print(f"trained in {time.perf_counter() - t0:.1f} s; PyTorch test accuracy {acc:.4f}; wrote {path}")
    return acc


def recorded_accuracy(path=MODEL) -> float:
    """The test accuracy --train stored in the file's metadata."""
    import onnx

    props = {p.key: p.value for p in onnx.load(str(path)).metadata_props}
    return float(props["test_accuracy"])


def evaluate(backend: str = "numpy", path=MODEL, batches=None, verbose: bool = True) -> dict:
    """Runs ``path`` on ``batches`` (default ``test_set()``) through InferenceSession on ``backend``
    and through ONNX Runtime CPU: both accuracies and the largest |logit difference|."""
    import onnxruntime as ort

    batches = test_set() if batches is None else batches
    sess = po.InferenceSession(str(path), backend=backend)
    ref = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    xp = np
    if backend == "cuda":
        import cupy as xp
    ours_ok = ort_ok = total = 0
    diff = scale = 0.0
    t_ours = t_ort = 0.0
    for ids, labels in batches:
        t0 = time.perf_counter()
        got = sess.run(["logits"], {"ids": xp.asarray(ids)})[0]
        got = got.get() if hasattr(got, "get") else np.asarray(got)
        t1 = time.perf_counter()
        want = ref.run(["logits"], {"ids": ids})[0]
        t2 = time.perf_counter()
        t_ours, t_ort = t_ours + t1 - t0, t_ort + t2 - t1
        ours_ok += int((got.argmax(1) == labels).sum())
        ort_ok += int((want.argmax(1) == labels).sum())
        total += len(labels)
        diff = max(diff, float(np.abs(got.astype(np.float64) - want).max()))
        scale = max(scale, float(np.abs(want).max()))
    res = {"backend": backend, "n_test": total, "accuracy": ours_ok / total, "ort_accuracy": ort_ok / total,
           "max_abs_diff": diff, "max_abs_logit": scale, "ops": [n.op_type for n in sess.graph.nodes]}
    if verbose:
        print(sess.graph)
        print(f"{path.name if hasattr(path, 'name') else path}: {total} test sentences of lengths "
              f"{sorted({ids.shape[1] for ids, _ in batches})}")
        print(f"  InferenceSession ({backend}): accuracy {res['accuracy']:.4f}  ({t_ours * 1e3:.1f} ms)")
        print(f"  ONNX Runtime (CPU):       accuracy {res['ort_accuracy']:.4f}  ({t_ort * 1e3:.1f} ms)")
        print(f"  max |logit difference| {diff:.3g} (largest |logit| {scale:.3g})")
    return res


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backend", default="numpy", choices=["numpy", "emulator", "cuda"])
    ap.add_argument("--train", action="store_true", help=f"train with PyTorch and rewrite {MODEL.name} first")
    args = ap.parse_args(argv)
    if args.train:
        train()
    res = evaluate(args.backend)
    recorded = recorded_accuracy()
    print(f"  recorded test accuracy {recorded:.4f} (TEST_ACCURACY {TEST_ACCURACY:.4f})")
    return 0 if res["accuracy"] == recorded == TEST_ACCURACY else 1


if __name__ == "__main__":
    sys.exit(main())
