"""``quantize_model``: post-training static INT8 quantization of an ONNX model, written in the QDQ format.

How it works:

1. **Candidates.** A node is quantized when the fused int8 kernel of `passes_quant.fuse_qdq` can
   run it; everything else stays float32:

   * ``Conv`` with a float32 initializer weight of rank 4 (2-D convolution, any group), a float32
     input of rank 4 and no bias or an initializer bias (``po.qconv2d``);
   * ``Gemm`` with ``transA=0``, ``alpha=1``, ``beta=1`` (or no C), a 2-D float32 initializer B and
     no C or an initializer C of N elements (``QLinearGemm``, a 1 x 1 ``qconv2d``);
   * ``MatMul`` with a 2-D float32 initializer B and a float32 A of rank >= 2 (``po.qlinear_matmul``).

   What stays float: every other op (Softmax, Add, the residual Add of a ResNet block, Mul,
   normalisation, pooling...), a MatMul's Relu (``qlinear_matmul`` has no epilogue) and a bias Add
   after a MatMul; they read dequantized values. A Conv / Gemm followed by a Relu that is its
   output's only reader is quantized after the Relu, so the pass fuses the Relu into the int8
   epilogue.

2. **Calibration.** The float model runs on this package's ``numpy`` backend (``optimize=False``:
   the graph as written) on every feed of ``calibration_inputs``, with the tensors below exposed as
   extra outputs. Quantized tensors are the activation input of each candidate and its output (after
   the fused Relu). An input that a data-movement op (MaxPool, Flatten, Reshape, Transpose,
   Squeeze, Unsqueeze, Identity) makes from another quantized tensor takes that tensor's scale and
   zero point instead of its own (what ONNX Runtime's QDQ propagation does): re-quantizing a
   dequantized value at the same scale gives the same integer, so the data-movement op costs no
   extra rounding, and ONNX Runtime runs it on the 8-bit values.

   Activations are per tensor, uint8 or int8 (``activation_dtype``), asymmetric by default
   (0.0 exactly representable; `pygpu_ops.quant_params` with ``symmetric=False`` on the range), or
   symmetric (``symmetric_activations=True``: zero point 0 for int8, 128 for uint8). The range:

   * ``method="minmax"``: the smallest and largest value over all calibration feeds;
   * ``method="percentile"``: asymmetric, the ``100 - p`` and ``p`` percentiles of the values
     (both tails clipped); symmetric, the ``p`` percentile of ``|x|``. Outliers beyond it saturate,
     in exchange for a finer step for the rest. The values of every feed are kept in host memory
     to take the exact percentile: the calibration set must fit (a histogram would lift this).

3. **Weights**: int8, symmetric, zero point 0, one scale per output channel (``per_channel=True``:
   axis 0 of a Conv weight and of a Gemm ``transB=1`` B, axis 1 of a MatMul B or a Gemm ``transB=0``
   B) or one per tensor: ``scale = max|w| / 127`` (`pygpu_ops.quant_params`), ties to even. **Bias**:
   int32 at scale ``float32(x_scale * w_scale[o])`` (the exact scale `fuse_qdq` checks), values
   ``rint(b / scale)`` saturated to int32.

4. **Writing** (the QDQ format of ONNX Runtime's ``quantize_static``): each quantized activation
   ``t`` gets ``QuantizeLinear`` -> ``t_quantized`` and one ``DequantizeLinear`` per reader (ONNX
   Runtime's "unique DQ per node unit", which `fuse_qdq` needs: a DequantizeLinear with two readers
   is left as written); a weight becomes an int8 initializer read through a ``DequantizeLinear``
   (``axis`` set per channel), a bias an int32 one. A graph output that is quantized keeps its name
   on the last DequantizeLinear. Node names are kept; unnamed nodes get ``<op_type>_<index>``.
   Scales and zero points are 0-d initializers (per tensor) or 1-d (per channel). Per-channel
   scales need opset 13 (``DequantizeLinear``'s ``axis``); opset 10-12 works per tensor.

5. **Report** (`QuantizationReport`): the QDQ model runs through `InferenceSession` on ``numpy``
   with the graph passes (so the int8 kernels run, as they will for the user), each quantized
   node's 8-bit output exposed; per node the error of its dequantized output against the float
   model's on the calibration feeds (max abs, max abs relative to max |float|, mean abs, and the
   quantization step), the kernel it ran on, and the same errors for the model's outputs.

Limits: the opset must be >= 10; models with control flow or ops the session cannot run cannot be
calibrated (the session's ``NotImplementedError``); an int32 bias that saturates is reported in
``QuantizationReport.saturated_biases``, not fixed.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

METHODS = ("minmax", "percentile")
ACTIVATION_DTYPES = ("uint8", "int8")
# Ops that move 8-bit values without changing them: their quantized output can share the input's
# scale and zero point exactly.
DATA_MOVEMENT = ("MaxPool", "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Identity")


@dataclass
class TensorError:
    """Error of one tensor of the quantized model against the float model, over the calibration set."""
    name: str
    max_abs: float
    max_rel: float         # max |q - f| / max |f|
    mean_abs: float
    float_max_abs: float


@dataclass
class LayerError(TensorError):
    node: str = ""
    op_type: str = ""
    kernel: str = ""       # what the quantized model's node runs on (InferenceSession, numpy backend)
    scale: float = 0.0     # the output's quantization step
    zero_point: int = 0


@dataclass
class QuantizationReport:
    """Per quantized node (``layers``) and per model output (``outputs``), the error of the quantized
    model on the calibration feeds; ``activations``: tensor -> (scale, zero point) chosen;
    ``shared``: tensor -> the tensor whose parameters it reuses; ``float_nodes``: candidates left
    float, with why; ``saturated_biases``: biases with a value clipped to int32."""
    layers: List[LayerError]
    outputs: List[TensorError]
    activations: Dict[str, Tuple[float, int]]
    shared: Dict[str, str] = field(default_factory=dict)
    float_nodes: Dict[str, str] = field(default_factory=dict)
    saturated_biases: List[str] = field(default_factory=list)
    settings: Dict[str, object] = field(default_factory=dict)

    def layer(self, node: str) -> LayerError:
        for e in self.layers:
            if e.node == node:
                return e
        raise KeyError(f"no quantized node {node!r}; quantized: {[e.node for e in self.layers]}")

    def __str__(self) -> str:
        head = f"{'node':<16} {'op':<7} {'kernel':<28} {'scale':>10} {'zp':>4} {'max abs':>10} {'max rel':>8} {'mean abs':>10}"
        rows = [head]
        for e in self.layers:
            rows.append(f"{e.node:<16} {e.op_type:<7} {e.kernel:<28} {e.scale:>10.3g} {e.zero_point:>4d} "
                        f"{e.max_abs:>10.3g} {e.max_rel:>8.2%} {e.mean_abs:>10.3g}")
        for e in self.outputs:
            rows.append(f"{'output ' + e.name:<16} {'':<7} {'':<28} {'':>10} {'':>4} "
                        f"{e.max_abs:>10.3g} {e.max_rel:>8.2%} {e.mean_abs:>10.3g}")
        for n, why in self.float_nodes.items():
            rows.append(f"{n}: left float ({why})")
        return "\n".join(rows)


@dataclass
class _Candidate:
    index: int
    node: object           # onnx NodeProto of the working copy
    x: str
    w: str
    b: str
    out: str               # the tensor quantized after the node (its output, or its Relu's)
    w_axis: int            # the weight's output-channel axis


# ---------------------------------------------------------------------------------------------
# Argument checks
# ---------------------------------------------------------------------------------------------
def _check_args(activation_dtype, method, percentile, per_channel, symmetric_activations):
    if activation_dtype not in ACTIVATION_DTYPES:
        raise ValueError(f"quantize_model: activation_dtype must be one of {ACTIVATION_DTYPES}; got {activation_dtype!r}")
    if method not in METHODS:
        raise ValueError(f"quantize_model: method must be one of {METHODS}; got {method!r}")
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float, np.integer, np.floating)):
        raise TypeError(f"quantize_model: percentile must be a number; got {type(percentile).__name__}")
    if not 50.0 < float(percentile) <= 100.0:
        raise ValueError(f"quantize_model: percentile must be in (50, 100]; got {percentile!r}")
    for name, v in (("per_channel", per_channel), ("symmetric_activations", symmetric_activations)):
        if not isinstance(v, (bool, np.bool_)):
            raise TypeError(f"quantize_model: {name} must be a bool; got {type(v).__name__}")


def _feeds(calibration_inputs) -> List[Dict[str, np.ndarray]]:
    if isinstance(calibration_inputs, Mapping) or not isinstance(calibration_inputs, Iterable):
        raise TypeError("quantize_model: calibration_inputs must be an iterable of feed dicts "
                        f"(input name -> array); got {type(calibration_inputs).__name__}")
    feeds = []
    for i, f in enumerate(calibration_inputs):
        if not isinstance(f, Mapping):
            raise TypeError(f"quantize_model: calibration_inputs[{i}] must be a dict of input name -> array; "
                            f"got {type(f).__name__}")
        feeds.append({k: np.asarray(v) for k, v in f.items()})
    if not feeds:
        raise ValueError("quantize_model: calibration_inputs is empty; at least one feed is needed to calibrate")
    return feeds


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
def _attr(node, key, default):
    from onnx import helper

    for a in node.attribute:
        if a.name == key:
            return helper.get_attribute_value(a)
    return default


def _candidates(graph, inits: Dict[str, np.ndarray], float_nodes: Dict[str, str]) -> List[_Candidate]:
    readers: Dict[str, list] = {}
    for n in graph.node:
        for i in n.input:
            readers.setdefault(i, []).append(n)
    outputs = {o.name for o in graph.output}
    found = []
    for idx, n in enumerate(graph.node):
        if n.domain not in ("", "ai.onnx") or n.op_type not in ("Conv", "Gemm", "MatMul"):
            continue
        ins = list(n.input) + [""] * (3 - len(n.input))
        x, w, b = ins[0], ins[1], ins[2] if n.op_type != "MatMul" else ""
        wa = inits.get(w)
        why = None
        if x in inits:
            why = "its input is a constant"
        elif wa is None or wa.dtype != np.float32:
            why = "its weight is not a float32 initializer"
        elif wa.ndim != (4 if n.op_type == "Conv" else 2):
            why = f"its weight has rank {wa.ndim}"
        elif b and (b not in inits or inits[b].dtype != np.float32):
            why = "its bias is not a float32 initializer"
        if n.op_type == "Gemm" and why is None:
            if _attr(n, "transA", 0) or float(_attr(n, "alpha", 1.0)) != 1.0 or (b and float(_attr(n, "beta", 1.0)) != 1.0):
                why = "Gemm with transA, alpha or beta the int8 kernel does not take"
            elif b and inits[b].size != wa.shape[0 if _attr(n, "transB", 0) else 1]:
                why = "its C is not one value per output column"
        elif n.op_type == "Conv" and why is None and b and inits[b].ndim != 1:
            why = "its bias is not 1-D"
        if why is not None:
            float_nodes[n.name] = why
            continue
        out = n.output[0]
        r = readers.get(out, [])
        if n.op_type != "MatMul" and out not in outputs and len(r) == 1 and r[0].op_type == "Relu" and r[0].domain in ("", "ai.onnx"):
            out = r[0].output[0]
        axis = 1 if n.op_type == "MatMul" or (n.op_type == "Gemm" and not _attr(n, "transB", 0)) else 0
        found.append(_Candidate(idx, n, x, w, b, out, axis))
    return found


def _sources(graph, cands: List[_Candidate], inits) -> Tuple[List[str], Dict[str, str]]:
    """The quantized activations in graph order, and input -> the tensor it shares parameters with."""
    producer = {o: n for n in graph.node for o in n.output}
    outs = {c.out for c in cands}
    shared: Dict[str, str] = {}

    def origin(t: str, seen=()) -> Optional[str]:
        p = producer.get(t)
        if p is None or p.op_type not in DATA_MOVEMENT or p.domain not in ("", "ai.onnx") or not p.input:
            return None
        src = p.input[0]
        if src in outs:
            return src
        return origin(src, seen + (t,)) if src not in seen else None

    for c in cands:
        o = origin(c.x)
        if o is not None:
            shared[c.x] = o
    # every tensor on the data-movement path between a shared input and its source carries the
    # source's parameters too, so each op on it runs between a DQ and a Q of the same parameters
    for t, src in list(shared.items()):
        cur = producer[t].input[0]
        while cur != src:
            shared[cur] = src
            cur = producer[cur].input[0]
    tensors = []
    for c in cands:
        for t in (c.x, c.out):
            if t not in tensors:
                tensors.append(t)
    for t in shared:
        if t not in tensors:
            tensors.append(t)
    return tensors, shared


def _with_outputs(proto, names: List[str], elem: Dict[str, int]):
    """A copy of ``proto`` with ``names`` as extra graph outputs (element type from ``elem``, else
    float; the rank the session's shape walk infers, dims unnamed: ONNX requires a shape there)."""
    import onnx
    from onnx import TensorProto, helper

    from . import onnx_import
    from .session import declared_feeds, walk

    graph = onnx_import.to_graph(proto)
    _, env = walk(graph, declared_feeds(graph), "numpy")
    m = onnx.ModelProto()
    m.CopyFrom(proto)
    have = {o.name for o in m.graph.output}
    for n in names:
        if n not in have:
            m.graph.output.append(helper.make_tensor_value_info(n, elem.get(n, TensorProto.FLOAT), [None] * env[n].rank))
    return m


# ---------------------------------------------------------------------------------------------
# Calibration
# ---------------------------------------------------------------------------------------------
def _activation_params(values: np.ndarray, dtype: str, method: str, percentile: float, symmetric: bool):
    """(scale float32, zero point of ``dtype``) for one tensor's calibration values (float32, 1-D)."""
    from ..quantization import quant_params

    if method == "minmax" or values.size == 0:
        lo = float(values.min()) if values.size else 0.0
        hi = float(values.max()) if values.size else 0.0
    elif symmetric:
        hi = float(np.percentile(np.abs(values.astype(np.float64)), percentile))
        lo = -hi
    else:
        v = values.astype(np.float64)
        lo, hi = (float(t) for t in np.percentile(v, [100.0 - percentile, percentile]))
    rng = np.array([lo, hi], np.float32)
    s, z = quant_params(rng, symmetric=symmetric, dtype=dtype, backend="numpy")
    return np.float32(s), np.asarray(z).astype(dtype).reshape(())


def _calibrate(proto, feeds, tensors, method):
    """tensor -> its calibration values (percentile) or [min, max] (minmax), float32, 1-D."""
    from .session import InferenceSession

    inputs = {i.name for i in proto.graph.input}
    inner = [t for t in tensors if t not in inputs]   # graph inputs are read from the feeds
    sess = InferenceSession(_with_outputs(proto, inner, {}), backend="numpy", optimize=False)
    stats: Dict[str, list] = {t: [] for t in tensors}
    meta: Dict[str, Tuple[np.dtype, int]] = {}
    for feed in feeds:
        got = dict(zip(inner, sess.run(inner, feed)))
        for t in tensors:
            v = got[t] if t in got else feed[t]
            v = np.asarray(v)
            meta[t] = (v.dtype, v.ndim)
            if v.dtype != np.float32:
                continue
            if method == "minmax":
                stats[t].append(np.array([v.min(), v.max()], np.float32) if v.size else np.zeros(0, np.float32))
            else:
                stats[t].append(v.reshape(-1))
    return {t: np.concatenate(s) if s else np.zeros(0, np.float32) for t, s in stats.items()}, meta


# ---------------------------------------------------------------------------------------------
# Writing the QDQ model
# ---------------------------------------------------------------------------------------------
class _Names:
    def __init__(self, graph):
        self.used = {v for n in graph.node for v in list(n.input) + list(n.output)}
        self.used |= {t.name for t in graph.initializer} | {v.name for v in graph.input} | {v.name for v in graph.output}
        self.used |= {n.name for n in graph.node}

    def __call__(self, base: str) -> str:
        name, k = base, 1
        while name in self.used:
            name, k = f"{base}_{k}", k + 1
        self.used.add(name)
        return name


def _write(proto, cands, act: Dict[str, Tuple[np.float32, np.ndarray]], inits, per_channel: bool, report: QuantizationReport):
    import onnx
    from onnx import helper, numpy_helper

    from ..quantization import quant_params, quantize

    m = onnx.ModelProto()
    m.CopyFrom(proto)
    g = m.graph
    names = _Names(g)
    new_inits: List = []
    head: List = []            # weight / bias DequantizeLinear nodes and graph-input Q / DQ

    def const(base, arr):
        name = names(base)
        new_inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    # weights and biases
    by_index = {}
    for c in cands:
        node = g.node[c.index]
        w = inits[c.w]
        axis = c.w_axis if per_channel else None
        ws, _ = quant_params(w, axis=axis, symmetric=True, dtype="int8", backend="numpy")
        ws = np.asarray(ws, np.float32)
        wq = quantize(w, ws, 0, axis=axis, dtype="int8", backend="numpy")
        attrs = {"axis": axis} if axis is not None else {}
        s_name = const(f"{c.w}_scale", ws)
        wdq = names(f"{node.name}_{c.w}_dequantized")
        head.append(helper.make_node("DequantizeLinear", [const(f"{c.w}_quantized", wq), s_name,
                                                          const(f"{c.w}_zero_point", np.zeros(ws.shape, np.int8))],
                                     [wdq], name=names(f"{wdq}_node"), **attrs))
        node.input[1] = wdq
        if c.b:
            xs = act[c.x][0]
            bs = (np.float32(xs) * ws).astype(np.float32)   # the scale fuse_qdq checks, element for element
            b = inits[c.b].astype(np.float64).reshape(-1)
            with np.errstate(over="ignore", invalid="ignore"):
                exact = np.rint(b / np.broadcast_to(bs.astype(np.float64), b.shape))
            lim = np.iinfo(np.int32)
            if (exact < lim.min).any() or (exact > lim.max).any():
                report.saturated_biases.append(c.b)
            bq = np.clip(exact, lim.min, lim.max).astype(np.int32)
            bdq = names(f"{node.name}_{c.b}_dequantized")
            head.append(helper.make_node("DequantizeLinear", [const(f"{c.b}_quantized", bq), const(f"{c.b}_scale", bs),
                                                              const(f"{c.b}_zero_point", np.zeros(bs.shape, np.int32))],
                                         [bdq], name=names(f"{bdq}_node"), **({"axis": 0} if bs.ndim else {})))
            node.input[2] = bdq
        by_index[c.index] = c

    # activations: Q after the producer, one DQ per reader
    graph_outputs = {o.name for o in g.output}
    graph_inputs = {i.name for i in g.input}
    qdq_after: Dict[str, list] = {}
    quantized_name: Dict[str, str] = {}
    for t, (s, z) in act.items():
        src = t
        renamed = t in graph_outputs and t not in graph_inputs
        if renamed:   # the producer writes a new name; the last DQ writes the graph output
            src = names(f"{t}_QuantizeLinear_Input")
            for n in g.node:
                for i, o in enumerate(n.output):
                    if o == t:
                        n.output[i] = src
        qn = names(f"{t}_quantized")
        quantized_name[t] = qn
        sn, zn = const(f"{t}_scale", s), const(f"{t}_zero_point", z)
        nodes = [helper.make_node("QuantizeLinear", [src, sn, zn], [qn], name=names(f"{t}_QuantizeLinear"))]
        k = 0
        for n in g.node:
            for i, inp in enumerate(n.input):
                if inp == t:
                    dq = names(f"{t}_dequantized_{k}")
                    k += 1
                    nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [dq], name=names(f"{dq}_node")))
                    n.input[i] = dq
        if renamed:
            nodes.append(helper.make_node("DequantizeLinear", [qn, sn, zn], [t], name=names(f"{t}_DequantizeLinear")))
        if t in graph_inputs:
            head.extend(nodes)
        else:
            qdq_after[src] = nodes

    order = list(head)
    for n in g.node:
        order.append(n)
        for o in n.output:
            order.extend(qdq_after.get(o, []))
    del g.node[:]
    g.node.extend(order)
    g.initializer.extend(new_inits)
    # a float weight or bias that no node reads any more is dropped
    read = {i for n in g.node for i in n.input}
    keep = [t for t in g.initializer if t.name in read]
    del g.initializer[:]
    g.initializer.extend(keep)
    return m, quantized_name


# ---------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------
class _ErrorSum:
    def __init__(self):
        self.max_abs = self.float_max = self.total = 0.0
        self.count = 0

    def add(self, got: np.ndarray, want: np.ndarray):
        d = np.abs(got.astype(np.float64) - want.astype(np.float64))
        if d.size:
            self.max_abs = max(self.max_abs, float(d.max()))
            self.float_max = max(self.float_max, float(np.abs(want).max()))
            self.total += float(d.sum())
            self.count += d.size

    def values(self) -> dict:
        return dict(max_abs=self.max_abs, max_rel=self.max_abs / self.float_max if self.float_max else 0.0,
                    mean_abs=self.total / self.count if self.count else 0.0, float_max_abs=self.float_max)


def _measure(proto, qmodel, cands, act, quantized_name, feeds, report: QuantizationReport):
    from onnx import TensorProto

    from .session import InferenceSession

    outs = [o.name for o in proto.graph.output]
    layer_tensors = [c.out for c in cands]
    fsess = InferenceSession(_with_outputs(proto, layer_tensors, {}), backend="numpy", optimize=False)
    qnames = [quantized_name[t] for t in layer_tensors]
    elem = {quantized_name[t]: TensorProto.UINT8 if act[t][1].dtype == np.uint8 else TensorProto.INT8 for t in layer_tensors}
    qsess = InferenceSession(_with_outputs(qmodel, qnames, elem), backend="numpy")
    layer_err = [_ErrorSum() for _ in cands]
    out_err = [_ErrorSum() for _ in outs]
    for feed in feeds:
        fvals = fsess.run(outs + layer_tensors, feed)
        qvals = qsess.run(outs + qnames, feed)
        for e, f, q in zip(out_err, fvals[:len(outs)], qvals[:len(outs)]):
            e.add(np.asarray(q), np.asarray(f))
        for e, t, f, q in zip(layer_err, layer_tensors, fvals[len(outs):], qvals[len(outs):]):
            s, z = act[t]
            e.add((np.asarray(q).astype(np.float64) - float(z)) * float(s), np.asarray(f))
    kernels = {n.name: n.kernel for n in qsess.graph.nodes}
    for c, e in zip(cands, layer_err):
        s, z = act[c.out]
        report.layers.append(LayerError(name=c.out, node=c.node.name, op_type=c.node.op_type,
                                        kernel=kernels.get(c.node.name, ""), scale=float(s), zero_point=int(z),
                                        **e.values()))
    for name, e in zip(outs, out_err):
        report.outputs.append(TensorError(name=name, **e.values()))


# ---------------------------------------------------------------------------------------------
# Entry point
# ---------------------------------------------------------------------------------------------
def quantize_model(model, calibration_inputs, *, activation_dtype: str = "uint8", method: str = "minmax",
                   percentile: float = 99.99, per_channel: bool = True, symmetric_activations: bool = False,
                   output_path=None):
    """Post-training static quantization of ``model`` into the QDQ format (module docstring).

    ``model``: a path, bytes or ``onnx.ModelProto`` (as `InferenceSession` takes);
    ``calibration_inputs``: an iterable of feed dicts (input name -> array), at least one;
    ``activation_dtype``: ``"uint8"`` or ``"int8"``; ``method``: ``"minmax"`` or ``"percentile"``
    (``percentile`` in (50, 100]); ``per_channel``: one weight scale per output channel (opset >= 13)
    or per tensor; ``symmetric_activations``: zero point 0 (int8) / 128 (uint8) instead of a
    calibrated one; ``output_path``: also save the model there.

    Returns ``(onnx.ModelProto, QuantizationReport)``: the model passes ``onnx.checker``, ONNX
    Runtime runs it, and `InferenceSession` runs its quantized nodes on the int8 kernels."""
    import onnx

    from . import onnx_import

    _check_args(activation_dtype, method, percentile, per_channel, symmetric_activations)
    feeds = _feeds(calibration_inputs)
    src = onnx_import.load(model)
    opset = onnx_import.default_opset(src)
    if opset < 10:
        raise ValueError(f"quantize_model: model has opset {opset}; QuantizeLinear / DequantizeLinear need opset >= 10")
    if per_channel and opset < 13:
        raise ValueError(f"quantize_model: per_channel=True needs opset >= 13 (DequantizeLinear's axis); the model "
                         f"has opset {opset}: pass per_channel=False or convert the model")
    proto = onnx.ModelProto()
    proto.CopyFrom(src)
    names = _Names(proto.graph)
    for i, n in enumerate(proto.graph.node):
        if not n.name:
            n.name = names(f"{n.op_type}_{i}")
    from onnx import numpy_helper

    inits = {t.name: numpy_helper.to_array(t) for t in proto.graph.initializer}
    report = QuantizationReport([], [], {}, settings=dict(
        activation_dtype=activation_dtype, method=method, percentile=float(percentile) if method == "percentile" else None,
        per_channel=bool(per_channel), symmetric_activations=bool(symmetric_activations), calibration_feeds=len(feeds)))
    cands = _candidates(proto.graph, inits, report.float_nodes)
    tensors, shared = _sources(proto.graph, cands, inits)
    values, meta = _calibrate(proto, feeds, tensors, method)

    # drop candidates whose activations are not what the int8 kernels take
    kept = []
    for c in cands:
        (xd, xr), (od, _) = meta[c.x], meta[c.out]
        if xd != np.float32 or od != np.float32:
            report.float_nodes[c.node.name] = "its input or output is not float32"
        elif c.node.op_type == "Conv" and xr != 4:
            report.float_nodes[c.node.name] = f"a Conv on rank-{xr} input (the int8 kernel is 2-D)"
        elif c.node.op_type == "MatMul" and xr < 2:
            report.float_nodes[c.node.name] = "a MatMul of a 1-D input"
        elif c.node.op_type == "Gemm" and xr != 2:
            report.float_nodes[c.node.name] = f"a Gemm of a rank-{xr} input"
        else:
            kept.append(c)
    cands = kept
    tensors, shared = _sources(proto.graph, cands, inits)
    act = {}
    for t in tensors:
        if t not in shared:
            act[t] = _activation_params(values[t], activation_dtype, method, float(percentile), bool(symmetric_activations))
    for t, s in shared.items():
        act[t] = act[s]
    act = {t: act[t] for t in tensors}
    report.activations = {t: (float(s), int(z)) for t, (s, z) in act.items()}
    report.shared = dict(shared)

    qmodel, quantized_name = _write(proto, cands, act, inits, bool(per_channel), report)
    onnx.checker.check_model(qmodel)
    _measure(proto, qmodel, cands, act, quantized_name, feeds, report)
    if output_path is not None:
        onnx.save(qmodel, str(output_path))
    return qmodel, report
