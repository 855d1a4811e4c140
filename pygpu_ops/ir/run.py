"""``pygpu-ops run MODEL.onnx``: run an ONNX model through `InferenceSession` from the command line.

How it works:

1. Inputs. ``--input name=file.npy`` loads a feed; every input not given one gets random data of
   its declared shape and dtype (`random_feed`: standard normal floats, integers in [0, 10),
   random booleans; seeded by ``--seed``). A named symbolic dimension takes its value from
   ``--dim name=value`` (default 1); an unnamed one is 1.
2. The session (``--backend``, ``--no-optimize``, ``--layout``) runs the model once; each output is printed
   (shape, dtype, range) and, with ``--output-dir``, saved as ``<output name>.npy``.
3. ``--compare-ort`` runs the same feed through ONNX Runtime's CPU execution provider and prints,
   per output, the largest absolute difference and the relative one, ``max|ours - ort| /
   max|ort|`` (relative to the output's largest magnitude, so elements near zero do not blow it
   up). A shape mismatch or a relative difference above ``--rtol`` makes the exit status 1.
4. ``--profile`` wraps each step of the session's plan (`InferenceSession.last_plan`) in a timer,
   runs ``--repeats`` times after the first (warm-up) run and prints the median time per node and
   the total per op type, both sorted, largest first. On ``cuda`` a node's time is its GPU time
   between two CUDA events on the current stream; on ``numpy`` and ``emulator`` it is the wall
   time of the step on this CPU (for the emulator, the time to *emulate* the kernels, which says
   nothing about a GPU), and the table says which. ``--plot DIR`` draws both as bar charts in one
   PNG where matplotlib is importable.

Errors the user can fix (a missing or invalid model file, a malformed ``--input``/``--dim``, a feed
of the wrong shape or dtype, an op the session refuses) are one line on stderr and exit status 2.

Limits: host-side only for the feeds (``.npy`` files are NumPy arrays; on ``cuda`` they are
uploaded before the run and the outputs copied back for printing and comparison).
"""
from __future__ import annotations

import os
import statistics
import sys
import time
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._runtime import backends
from .._runtime.device import to_host

#: Exit status of a usage or input error (as argparse uses for its own).
USAGE_ERROR = 2


def add_arguments(p) -> None:
    p.add_argument("model", help="the .onnx file")
    p.add_argument("--input", action="append", default=[], metavar="NAME=FILE.npy",
                   help="a feed from a .npy file (repeatable); inputs without one get random data")
    p.add_argument("--dim", action="append", default=[], metavar="NAME=VALUE",
                   help="the value of a named symbolic dimension for random inputs (repeatable; default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs (default 0)")
    p.add_argument("--backend", default="auto", choices=("auto",) + backends.BACKENDS,
                   help="where the session runs (default auto: the default backend for NumPy inputs)")
    p.add_argument("--no-optimize", action="store_true", help="InferenceSession(optimize=False)")
    p.add_argument("--layout", default="NCHW", choices=("NCHW", "NHWC"),
                   help="InferenceSession(layout=...): NHWC runs the CNN channels-last (default NCHW)")
    p.add_argument("--compare-ort", action="store_true",
                   help="max abs and rel difference per output against ONNX Runtime (CPU provider)")
    p.add_argument("--rtol", type=float, default=1e-4,
                   help="--compare-ort fails (exit 1) above this relative difference (default 1e-4)")
    p.add_argument("--profile", action="store_true", help="time per node and per op type, sorted")
    p.add_argument("--repeats", type=int, default=5, help="--profile: timed runs after the warm-up (default 5)")
    p.add_argument("--plot", metavar="DIR", help="--profile: write a bar chart PNG into DIR (needs matplotlib)")
    p.add_argument("--output-dir", metavar="DIR", help="save each output as DIR/<output name>.npy")


# ---------------------------------------------------------------------------------------------
# Inputs
# ---------------------------------------------------------------------------------------------
def parse_pairs(items: Sequence[str], option: str) -> Dict[str, str]:
    """``["a=b", ...]`` -> ``{"a": "b"}``; ``ValueError`` naming the option for a malformed or repeated one."""
    out: Dict[str, str] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise ValueError(f"{option} {item!r}: expected NAME=VALUE")
        if name in out:
            raise ValueError(f"{option}: {name!r} is given twice")
        out[name] = value
    return out


def parse_dims(items: Sequence[str]) -> Dict[str, int]:
    dims = {}
    for name, value in parse_pairs(items, "--dim").items():
        try:
            dims[name] = int(value)
        except ValueError:
            raise ValueError(f"--dim {name}={value}: the value must be an integer") from None
        if dims[name] < 0:
            raise ValueError(f"--dim {name}={value}: the value must be >= 0")
    return dims


def symbolic_dims(sess) -> List[str]:
    """The named symbolic dimensions of the model's inputs, in order of first appearance."""
    names: List[str] = []
    for n in sess.graph.inputs:
        for d in sess.graph.tensors[n].shape:
            if isinstance(d, str) and not d.startswith("?") and d not in names:
                names.append(d)
    return names


def input_shape(sess, name: str, dims: Dict[str, int]) -> Tuple[int, ...]:
    """The concrete shape of input ``name``: named symbolic dimensions from ``dims`` (default 1),
    unnamed ones 1."""
    shape = []
    for d in sess.graph.tensors[name].shape:
        if isinstance(d, str):
            d = dims.get(d, 1)
        shape.append(int(d))
    return tuple(shape)


def random_feed(sess, dims: Optional[Dict[str, int]] = None, seed: int = 0,
                given: Optional[Dict[str, np.ndarray]] = None) -> Dict[str, np.ndarray]:
    """A feed for every input of ``sess``: ``given`` where present, random data of the declared
    shape (`input_shape`) and dtype otherwise. ``ValueError`` for a ``dims`` name that is no
    symbolic dimension of the inputs."""
    dims = dict(dims or {})
    known = symbolic_dims(sess)
    unknown = sorted(set(dims) - set(known))
    if unknown:
        raise ValueError(f"--dim {unknown[0]}: not a symbolic dimension of the inputs "
                         f"({', '.join(known) if known else 'they have none'})")
    rng = np.random.default_rng(seed)
    feed = {}
    for n in sess.graph.inputs:
        if given and n in given:
            feed[n] = given[n]
            continue
        shape, dtype = input_shape(sess, n, dims), sess.graph.tensors[n].dtype
        if dtype.kind == "f":
            feed[n] = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind in "iu":
            feed[n] = rng.integers(0, 10, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feed[n] = rng.random(shape) < 0.5
        else:
            raise ValueError(f"input {n!r}: no random data for dtype {dtype}; give it with --input {n}=FILE.npy")
    return feed


def load_inputs(items: Sequence[str], input_names: Sequence[str]) -> Dict[str, np.ndarray]:
    """``--input name=file.npy`` items -> arrays; ``ValueError`` naming the item on any problem."""
    out = {}
    for name, path in parse_pairs(items, "--input").items():
        if name not in input_names:
            raise ValueError(f"--input {name}={path}: {name!r} is not an input of the model; "
                             f"inputs are {list(input_names)}")
        if not os.path.isfile(path):
            raise ValueError(f"--input {name}={path}: no such file")
        try:
            arr = np.load(path, allow_pickle=False)
        except (ValueError, OSError) as e:
            raise ValueError(f"--input {name}={path}: not a .npy array file ({e})") from None
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"--input {name}={path}: holds an archive of several arrays, not one array")
        out[name] = arr
    return out


# ---------------------------------------------------------------------------------------------
# Comparison with ONNX Runtime
# ---------------------------------------------------------------------------------------------
def compare_ort(model_path: str, feed: Dict[str, np.ndarray], names: Sequence[str],
                got: Sequence[np.ndarray]) -> Optional[List[dict]]:
    """Per output: ``{"name", "shape_ok", "max_abs", "max_rel"}`` against ONNX Runtime's CPU
    provider, or None where onnxruntime is not installed. ``max_rel`` is ``max_abs / max|ort|``
    (``max_abs`` itself when the ONNX Runtime output is all zero)."""
    try:
        import onnxruntime as ort
    except ImportError:
        return None
    ref = ort.InferenceSession(model_path, providers=["CPUExecutionProvider"]).run(list(names), feed)
    rows = []
    for name, g, w in zip(names, got, ref):
        g, w = np.asarray(g), np.asarray(w)
        row = {"name": name, "shape": tuple(g.shape), "ort_shape": tuple(w.shape),
               "shape_ok": g.shape == w.shape, "max_abs": None, "max_rel": None}
        if row["shape_ok"]:
            if g.size:
                diff = np.abs(g.astype(np.float64) - w.astype(np.float64))
                max_abs = float(diff.max())
                scale = float(np.abs(w.astype(np.float64)).max())
                row.update(max_abs=max_abs, max_rel=max_abs / scale if scale > 0 else max_abs)
            else:
                row.update(max_abs=0.0, max_rel=0.0)
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------
# Profiling
# ---------------------------------------------------------------------------------------------
class _StepClock:
    """Per-step timers for one plan. ``wrap`` replaces each step's ``run`` by a timed one;
    ``restore`` puts the originals back (the plan is cached in the session)."""

    def __init__(self, plan, backend: str):
        self.plan, self.backend = plan, backend
        self.times: List[List[float]] = [[] for _ in plan.steps]
        self._orig = [s.run for s in plan.steps]
        self._events: List[Tuple[int, object, object]] = []
        self._cupy = None
        if backend == "cuda":
            import cupy

            self._cupy = cupy

    def wrap(self) -> None:
        for i, s in enumerate(self.plan.steps):
            s.run = self._timed(i, self._orig[i])

    def restore(self) -> None:
        for s, run in zip(self.plan.steps, self._orig):
            s.run = run

    def _timed(self, i: int, run):
        if self._cupy is not None:
            cp = self._cupy

            def timed(args):
                start, stop = cp.cuda.Event(), cp.cuda.Event()
                start.record()
                out = run(args)
                stop.record()
                self._events.append((i, start, stop))
                return out
        else:
            def timed(args):
                t0 = time.perf_counter()
                out = run(args)
                self.times[i].append((time.perf_counter() - t0) * 1e3)
                return out
        return timed

    def collect_events(self) -> None:
        """Reads the CUDA events of the last runs (after the device is synchronized)."""
        if self._cupy is None:
            return
        self._cupy.cuda.Device().synchronize()
        for i, start, stop in self._events:
            self.times[i].append(self._cupy.cuda.get_elapsed_time(start, stop))
        self._events.clear()


def profile(sess, feed: Dict[str, object], repeats: int) -> dict:
    """Median time per plan step over ``repeats`` runs (after one warm-up run) and the totals per
    op type; ``{"clock", "nodes": [...], "op_types": [...], "run_ms": [...]}``, both lists sorted
    by time, largest first."""
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1; got {repeats}")
    sess.run(None, feed)                         # warm-up: compiles, builds and caches the plan
    plan = sess.last_plan
    clock = _StepClock(plan, plan.backend)
    runs = []
    clock.wrap()
    try:
        for _ in range(repeats):
            t0 = time.perf_counter()
            out = sess.run(None, feed)
            if plan.backend == "cuda":
                import cupy

                cupy.cuda.Device().synchronize()
            runs.append((time.perf_counter() - t0) * 1e3)
            del out
        clock.collect_events()
    finally:
        clock.restore()
    nodes = []
    for s, t in zip(plan.steps, clock.times):
        outs = ", ".join("x".join(map(str, plan.shapes[o])) for o in s.outputs if o in plan.shapes)
        nodes.append({"node": s.node_name, "op_type": s.op_type, "kernel": s.kernel, "output": outs,
                      "median_ms": statistics.median(t) if t else 0.0})
    total = sum(n["median_ms"] for n in nodes) or 1.0
    by_type: Dict[str, dict] = {}
    for n in nodes:
        n["pct"] = 100.0 * n["median_ms"] / total
        e = by_type.setdefault(n["op_type"], {"op_type": n["op_type"], "nodes": 0, "ms": 0.0})
        e["nodes"] += 1
        e["ms"] += n["median_ms"]
    for e in by_type.values():
        e["pct"] = 100.0 * e["ms"] / total
    clock_name = ("GPU time per node: CUDA events on the current stream" if plan.backend == "cuda" else
                  f"wall time per node on this CPU ({plan.backend} backend"
                  + ("; the time to emulate the kernels, not a GPU time)" if plan.backend == "emulator" else ")"))
    return {"backend": plan.backend, "clock": clock_name, "repeats": repeats, "run_ms": runs,
            "nodes": sorted(nodes, key=lambda n: -n["median_ms"]),
            "op_types": sorted(by_type.values(), key=lambda e: -e["ms"])}


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[int]) -> str:
    lines = [tuple(head)] + [tuple(r) for r in rows]
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    return "\n".join("  ".join(c.rjust(w[i]) if i in right else c.ljust(w[i]) for i, c in enumerate(l)).rstrip()
                     for l in lines)


def format_profile(prof: dict) -> str:
    run = prof["run_ms"]
    out = [f"profile: {prof['clock']}; median of {prof['repeats']} runs after a warm-up; "
           f"whole run {statistics.median(run):.3f} ms (wall, min {min(run):.3f}, max {max(run):.3f})",
           "", "per node, slowest first:",
           _table(("node", "op", "kernel", "output", "ms", "%"),
                  [(n["node"], n["op_type"], n["kernel"], n["output"], f"{n['median_ms']:.3f}", f"{n['pct']:.1f}")
                   for n in prof["nodes"]], right=(4, 5)),
           "", "per op type:",
           _table(("op", "nodes", "ms", "%"),
                  [(e["op_type"], str(e["nodes"]), f"{e['ms']:.3f}", f"{e['pct']:.1f}") for e in prof["op_types"]],
                  right=(1, 2, 3))]
    return "\n".join(out)


def plot_profile(prof: dict, folder: str, stem: str) -> str:
    """One PNG with two horizontal bar charts: ms per op type and per node (the 25 slowest)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    nodes = prof["nodes"][:25]
    types = prof["op_types"]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(13, max(3.0, 0.3 * max(len(nodes), len(types)) + 1.5)))
    a1.barh([e["op_type"] for e in types][::-1], [e["ms"] for e in types][::-1])
    a1.set_xlabel("ms (median per run)")
    a1.set_title("per op type")
    a2.barh([f"{n['node']} ({n['op_type']})" for n in nodes][::-1], [n["median_ms"] for n in nodes][::-1])
    a2.set_xlabel("ms (median)")
    a2.set_title("per node" + (" (25 slowest)" if len(prof["nodes"]) > 25 else ""))
    a2.tick_params(axis="y", labelsize=7)
    fig.suptitle(f"{stem}: {prof['clock']}", fontsize=9)
    path = os.path.join(folder, f"profile_{stem}.png")
    fig.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(fig)
    return path


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------
def _describe(x: np.ndarray) -> str:
    s = f"shape {tuple(x.shape)} {x.dtype}"
    if x.size and x.dtype.kind in "fiub":
        s += f", min {x.min():.6g}, max {x.max():.6g}"
        if x.dtype.kind == "f":
            s += f", mean {x.astype(np.float64).mean():.6g}"
    return s


def _safe_file_name(name: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in name) or "output"


def main(args) -> int:
    from .session import InferenceSession

    try:
        sess = InferenceSession(args.model, backend=args.backend, optimize=not args.no_optimize,
                                layout=args.layout)
        given = load_inputs(args.input, sess.graph.inputs)
        feed = random_feed(sess, parse_dims(args.dim), args.seed, given)
        if args.plot and not args.profile:
            raise ValueError("--plot draws the profile: give --profile too")
        if args.profile and args.repeats < 1:
            raise ValueError(f"--repeats must be >= 1; got {args.repeats}")
        outputs = sess.run(None, feed)
    except (ValueError, TypeError, NotImplementedError, backends.BackendUnavailableError) as e:
        print(f"pygpu-ops run: {e}", file=sys.stderr)
        return USAGE_ERROR
    plan = sess.last_plan
    print(f"{args.model}: {len(sess.graph.nodes)} nodes, {len(plan.steps)} kernel steps on {plan.backend}, "
          f"peak {plan.peak_bytes} bytes of intermediates")
    for n, x in feed.items():
        print(f"  input  {n}: {_describe(np.asarray(x))}" + (" (from file)" if n in given else " (random)"))
    host = [to_host(o) for o in outputs]
    for n, x in zip(sess.graph.outputs, host):
        print(f"  output {n}: {_describe(x)}")
    if args.output_dir:
        os.makedirs(args.output_dir, exist_ok=True)
        for n, x in zip(sess.graph.outputs, host):
            path = os.path.join(args.output_dir, _safe_file_name(n) + ".npy")
            np.save(path, x)
            print(f"wrote {path}")
    status = 0
    if args.compare_ort:
        rows = compare_ort(args.model, {k: to_host(v) for k, v in feed.items()}, sess.graph.outputs, host)
        if rows is None:
            print("--compare-ort: onnxruntime is not installed (pip install onnxruntime); nothing compared")
        else:
            print(f"against ONNX Runtime (CPUExecutionProvider), rel = max|diff| / max|ort|, tolerance {args.rtol:g}:")
            for r in rows:
                if not r["shape_ok"]:
                    print(f"  {r['name']}: SHAPE MISMATCH {r['shape']} vs ONNX Runtime {r['ort_shape']}")
                    status = 1
                    continue
                bad = not r["max_rel"] <= args.rtol      # NaN fails
                print(f"  {r['name']}: max abs {r['max_abs']:.3g}, max rel {r['max_rel']:.3g}"
                      + ("  ABOVE TOLERANCE" if bad else "  ok"))
                status = status or int(bad)
    if args.profile:
        prof = profile(sess, feed, args.repeats)
        print()
        print(format_profile(prof))
        if args.plot:
            try:
                path = plot_profile(prof, args.plot, _safe_file_name(os.path.splitext(os.path.basename(args.model))[0]))
            except ImportError as e:
                print(f"--plot: no chart drawn, matplotlib is not importable ({e}); pip install matplotlib")
            else:
                print(f"wrote {path}")
    return status
