"""torchvision's ResNet-18 and MobileNetV2: ``.pth`` -> ``.onnx`` -> pygpu_ops.

    python examples/export_torchvision.py [--model resnet18|mobilenet_v2|all] [--weights FILE.pth]
        [--out-dir DIR] [--backend numpy|emulator|cuda] [--batch N] [--size PIXELS] [--opset 13]
        [--repeat 5]

For each model:

1. build it with torchvision (``weights=None``), or, where torchvision does not import, from
   `torchvision_nets.py` beside this file (the same modules and state_dict keys in plain
   ``torch.nn``), and, with ``--weights``, load a state_dict saved
   by ``torch.save(model.state_dict(), FILE)`` (a checkpoint dict holding ``"state_dict"`` and the
   ``module.`` prefix of ``nn.DataParallel`` are accepted; it is read with ``weights_only=True``,
   so a pickled whole model is refused). Without it the weights are random (PyTorch's default
   initialization) and every BatchNorm gets random statistics, so its folding is exercised: enough
   to check that the numbers agree;
2. export it in eval mode with ``torch.onnx.export`` (the TorchScript exporter, ``dynamo=False``
   where that argument exists, at ``--opset``; the batch dimension symbolic, named ``N``) to
   ``DIR/<model>.onnx``;
3. run the file through ``pygpu_ops.InferenceSession`` on ``--backend`` and compare its output
   with ONNX Runtime's CPU provider and with PyTorch itself on the same random input: the largest
   absolute difference and the relative one (``max|diff| / max|reference|``), which must stay
   within ``--rtol``;
4. time the three on the CPU (``--repeat`` runs after one warm-up each, the median printed, at
   PyTorch's and ONNX Runtime's default thread counts): the latency comparison against PyTorch
   for a model that came from it, which ``pygpu-ops bench --model`` cannot make from the ``.onnx``
   alone. With ``--backend cuda`` pygpu_ops' time is the GPU's; PyTorch and ONNX Runtime stay on
   the CPU here.

Exit status 0 when every comparison is within ``--rtol``, 1 otherwise, 2 when PyTorch is not
installed or an argument is wrong. The emulator runs the CUDA kernels on the
CPU: use a small ``--size`` (e.g. 32) there, a 224 x 224 ResNet-18 takes long. For a TensorFlow
``.pb`` or SavedModel, convert it with ``tf2onnx`` (``python -m tf2onnx.convert --saved-model DIR
--output model.onnx``) and give the ``.onnx`` to ``pygpu-ops run``.
"""
from __future__ import annotations

import argparse
import inspect
import os
import sys
import time
from pathlib import Path

import numpy as np

try:
    import pygpu_ops as po
except ImportError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    import pygpu_ops as po

from pygpu_ops.ir.run import compare_ort, to_host  # noqa: E402

MODELS = ("resnet18", "mobilenet_v2")


def load_state_dict(torch, path: str) -> dict:
    """The state_dict in ``path``: a plain one, or a checkpoint's ``"state_dict"``; ``module.``
    prefixes (nn.DataParallel) removed. ``ValueError`` for anything else."""
    if not os.path.isfile(path):
        raise ValueError(f"--weights {path}: no such file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:   # pickle of a whole model, a corrupt file...
        raise ValueError(f"--weights {path}: not a state_dict readable with weights_only=True ({e})") from None
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise ValueError(f"--weights {path}: expected a dict of parameter name -> tensor")
    return {k[len("module."):] if k.startswith("module.") else k: v for k, v in obj.items()}


def build(torch, name: str):
    """(torchvision's ``name`` with ``weights=None``, "torchvision"), or where torchvision does not
    import, (the same architecture from `torchvision_nets`, "torch.nn")."""
    try:
        import torchvision
    except Exception:   # ImportError, or the RuntimeError of a torchvision built for another torch
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import torchvision_nets

        return torchvision_nets.build(torch, name), "torch.nn (torchvision_nets.py)"
    return getattr(torchvision.models, name)(weights=None), "torchvision"


def export(torch, name: str, weights, path: str, batch: int, size: int, opset: int):
    """Writes ``path`` and returns (the eval-mode torch model, the example input, where it came from)."""
    net, source = build(torch, name)
    if weights is not None:
        net.load_state_dict(load_state_dict(torch, weights))
    else:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import torchvision_nets

        torchvision_nets.randomize_bn_stats(torch, net)
    net.eval()
    x = torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(0))
    kwargs = dict(input_names=["input"], output_names=["logits"], opset_version=opset,
                  dynamic_axes={"input": {0: "N"}, "logits": {0: "N"}}, do_constant_folding=True)
    if "dynamo" in inspect.signature(torch.onnx.export).parameters:
        kwargs["dynamo"] = False     # the TorchScript exporter: opset chosen here, classic op set
    with torch.no_grad():
        torch.onnx.export(net, (x,), path, **kwargs)
    return net, x, source


def _timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, (time.perf_counter() - t0) * 1e3


def median_ms(fn, repeat: int) -> float:
    """The median wall time of ``repeat`` calls of ``fn`` after one warm-up call, in ms."""
    fn()
    return float(np.median([_timed(fn)[1] for _ in range(repeat)]))


def _diff(got: np.ndarray, ref: np.ndarray):
    d = float(np.abs(got.astype(np.float64) - ref.astype(np.float64)).max())
    scale = float(np.abs(ref.astype(np.float64)).max())
    return d, d / scale if scale > 0 else d


def compare_model(path: str, x: np.ndarray, backend: str, rtol: float, torch_out=None) -> bool:
    """Runs ``path`` through InferenceSession and prints its differences to ONNX Runtime (CPU) and,
    where given, to PyTorch's output; True when all are within ``rtol``."""
    sess = po.InferenceSession(path, backend=backend)
    feed = {sess.graph.inputs[0]: x}
    sess.run(None, feed)                        # the first run compiles the kernels and plans
    out, ms = _timed(lambda: [to_host(o) for o in sess.run(None, feed)])
    print(f"  pygpu_ops on {backend}: output {out[0].shape}, {ms:.1f} ms (wall), "
          f"{len(sess.last_plan.steps)} steps, peak {sess.last_plan.peak_bytes / 2**20:.1f} MiB of intermediates")
    ok = True
    rows = compare_ort(path, feed, sess.graph.outputs, out)
    if rows is None:
        print("  onnxruntime is not installed: no ONNX Runtime comparison")
    for r in rows or []:
        if not r["shape_ok"]:
            print(f"  vs ONNX Runtime CPU: SHAPE MISMATCH {r['shape']} vs {r['ort_shape']}")
            ok = False
            continue
        good = r["max_rel"] <= rtol
        print(f"  vs ONNX Runtime CPU: max abs {r['max_abs']:.3g}, max rel {r['max_rel']:.3g} "
              f"{'ok' if good else 'ABOVE ' + format(rtol, 'g')}")
        ok = ok and good
    if torch_out is not None:
        if out[0].shape != torch_out.shape:
            print(f"  vs PyTorch: SHAPE MISMATCH {out[0].shape} vs {torch_out.shape}")
            return False
        d, rel = _diff(out[0], torch_out)
        good = rel <= rtol
        print(f"  vs PyTorch:          max abs {d:.3g}, max rel {rel:.3g} {'ok' if good else 'ABOVE ' + format(rtol, 'g')}")
        ok = ok and good
    return ok


def time_model(torch, net, x, path: str, backend: str, repeat: int) -> dict:
    """Median latency (ms) of PyTorch, ONNX Runtime CPU (where installed) and pygpu_ops on
    ``backend``, printed as a table with each one's ratio to PyTorch."""
    sess = po.InferenceSession(path, backend=backend)
    feed = {sess.graph.inputs[0]: x.numpy()}
    rows = {}
    with torch.no_grad():
        rows[f"PyTorch CPU ({torch.get_num_threads()} threads)"] = median_ms(lambda: net(x), repeat)
    try:
        import onnxruntime as ort
    except ImportError:
        ort = None
    if ort is not None:
        o = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        rows["ONNX Runtime CPU"] = median_ms(lambda: o.run(None, feed), repeat)
    rows[f"pygpu_ops {backend}"] = median_ms(lambda: [to_host(v) for v in sess.run(None, feed)], repeat)
    base = next(iter(rows.values()))
    print(f"  latency, batch {x.shape[0]}, median of {repeat}:")
    for k, v in rows.items():
        print(f"    {k:<28} {v:10.2f} ms  {v / base:6.2f}x PyTorch")
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="all", choices=MODELS + ("all",))
    ap.add_argument("--weights", metavar="FILE.pth", help="a state_dict for --model (one model only)")
    ap.add_argument("--out-dir", default=".", help="where the .onnx files go (default: here)")
    ap.add_argument("--backend", default="numpy", choices=["numpy", "emulator", "cuda"])
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--size", type=int, default=224, help="input height and width (default 224)")
    ap.add_argument("--opset", type=int, default=13)
    ap.add_argument("--rtol", type=float, default=1e-4, help="relative tolerance (default 1e-4)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per framework (default 5; 0: no timing)")
    args = ap.parse_args(argv)
    try:
        import torch
    except ImportError as e:
        print(f"export_torchvision: needs PyTorch ({e}); pip install torch (torchvision is optional)",
              file=sys.stderr)
        return 2
    names = MODELS if args.model == "all" else (args.model,)
    if args.weights and len(names) > 1:
        print("export_torchvision: --weights needs one --model (resnet18 or mobilenet_v2)", file=sys.stderr)
        return 2
    if args.batch < 1 or args.size < 32 or args.repeat < 0:
        print("export_torchvision: --batch must be >= 1, --size >= 32 and --repeat >= 0", file=sys.stderr)
        return 2
    os.makedirs(args.out_dir, exist_ok=True)
    ok = True
    for name in names:
        path = os.path.join(args.out_dir, f"{name}.onnx")
        try:
            net, x, source = export(torch, name, args.weights, path, args.batch, args.size, args.opset)
        except ValueError as e:
            print(f"export_torchvision: {e}", file=sys.stderr)
            return 2
        with torch.no_grad():
            ref, ms = _timed(lambda: net(x).numpy())
        print(f"{name} from {source}: {'weights ' + args.weights if args.weights else 'random weights'}, "
              f"exported to {path} (opset {args.opset}, {os.path.getsize(path) / 2**20:.1f} MiB); "
              f"PyTorch CPU {ms:.1f} ms")
        ok = compare_model(path, x.numpy(), args.backend, args.rtol, torch_out=ref) and ok
        if args.repeat:
            time_model(torch, net, x, path, args.backend, args.repeat)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
