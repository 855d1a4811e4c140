"""Train the small CNN of ``examples/digits_cnn.py`` on scikit-learn's bundled digits and save it.

    python examples/train_digits_cnn.py            # writes examples/digits_cnn.npz

The data: ``sklearn.datasets.load_digits`` (1797 8x8 grayscale images, values 0..16, shipped with
scikit-learn: no download), scaled to [0, 1]; a stratified 80 / 20 split with ``SPLIT_SEED``.
The network (NCHW, PyTorch's conventions):

    conv 1 -> 8, 3x3, padding 1, ReLU  -> max pool 2   (8, 4, 4)
    conv 8 -> 16, 3x3, padding 1, ReLU -> max pool 2   (16, 2, 2)
    flatten (64) -> fully connected 64 -> 10 -> softmax

trained with PyTorch on the CPU (Adam, cross-entropy, fixed seeds, deterministic algorithms).
The ``.npz`` holds the float32 weights (``conv1_w`` (8, 1, 3, 3), ``conv1_b``, ``conv2_w``
(16, 8, 3, 3), ``conv2_b``, ``fc_w`` (10, 64), ``fc_b``), the split (``split_seed``,
``test_size``, ``test_index``: the test images' indices into ``load_digits()``), and
``test_accuracy``: the float32 accuracy on that test split measured here with a plain float32
NumPy forward pass (independent of pygpu_ops), which ``tests/test_examples.py`` expects the
demo's float32 path to reproduce exactly. ``min_logit_gap`` records the smallest gap between the
two largest logits over the test images: float32 rounding differences between implementations
(a few ulps) cannot change a prediction unless they exceed it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

SPLIT_SEED = 0
TORCH_SEED = 0
TEST_SIZE = 0.2
EPOCHS = 60
BATCH = 32
LR = 3e-3


def load_split(seed: int = SPLIT_SEED, test_size: float = TEST_SIZE):
    """(x_train, y_train, x_test, y_test, test_index): images (N, 1, 8, 8) float32 in [0, 1]."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    d = load_digits()
    x = (d.images.astype(np.float32) / np.float32(16))[:, None]
    idx = np.arange(len(x))
    tr, te = train_test_split(idx, test_size=test_size, random_state=seed, stratify=d.target)
    te = np.sort(te)
    tr = np.sort(tr)
    return x[tr], d.target[tr], x[te], d.target[te], te


def numpy_logits(p: dict, x: np.ndarray) -> np.ndarray:
    """A plain float32 NumPy forward pass (direct loops over the 3x3 taps), for the record."""
    def conv_relu(x, w, b):
        n, c, h, wd = x.shape
        xp = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
        out = np.zeros((n, w.shape[0], h, wd), np.float32)
        for i in range(3):
            for j in range(3):
                out += np.einsum("nchw,oc->nohw", xp[:, :, i:i + h, j:j + wd], w[:, :, i, j]).astype(np.float32)
        return np.maximum(out + b[None, :, None, None], np.float32(0))

    def pool(x):
        n, c, h, w = x.shape
        return x.reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))

    h = pool(conv_relu(x, p["conv1_w"], p["conv1_b"]))
    h = pool(conv_relu(h, p["conv2_w"], p["conv2_b"]))
    return h.reshape(len(x), -1) @ p["fc_w"].T + p["fc_b"]


def train(epochs: int = EPOCHS) -> dict:
    import torch
    from torch import nn

    torch.manual_seed(TORCH_SEED)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    xtr, ytr, xte, yte, te = load_split()
    model = nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64, 10),
    )
    opt = torch.optim.Adam(model.parameters(), lr=LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    loss_fn = nn.CrossEntropyLoss()
    X, Y = torch.from_numpy(xtr), torch.from_numpy(ytr).long()
    gen = torch.Generator().manual_seed(TORCH_SEED)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(X), generator=gen)
        total = 0.0
        for i in range(0, len(X), BATCH):
            b = perm[i:i + BATCH]
            opt.zero_grad()
            loss = loss_fn(model(X[b]), Y[b])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(b)
        sched.step()
        if (epoch + 1) % 10 == 0:
            print(f"epoch {epoch + 1:3d}  train loss {total / len(X):.4f}")
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    p = {"conv1_w": sd["0.weight"], "conv1_b": sd["0.bias"], "conv2_w": sd["3.weight"],
         "conv2_b": sd["3.bias"], "fc_w": sd["7.weight"], "fc_b": sd["7.bias"]}
    logits = numpy_logits(p, xte)
    with torch.no_grad():
        tl = model.eval()(torch.from_numpy(xte)).numpy()
    acc = float(np.mean(logits.argmax(1) == yte))
    top2 = np.sort(logits, axis=1)[:, -2:]
    p.update(test_accuracy=np.float64(acc), split_seed=np.int64(SPLIT_SEED), test_size=np.float64(TEST_SIZE),
             test_index=te.astype(np.int16), min_logit_gap=np.float32((top2[:, 1] - top2[:, 0]).min()))
    print(f"float32 test accuracy {acc:.6f} ({int(round(acc * len(yte)))}/{len(yte)}); PyTorch agrees on "
          f"{np.mean(tl.argmax(1) == logits.argmax(1)):.4f} of predictions; smallest top-2 logit gap "
          f"{float(p['min_logit_gap']):.4g}")
    return p


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).with_name("digits_cnn.npz")))
    ap.add_argument("--epochs", type=int, default=EPOCHS)
    args = ap.parse_args(argv)
    p = train(args.epochs)
    np.savez_compressed(args.out, **p)
    print(f"wrote {args.out} ({Path(args.out).stat().st_size} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
