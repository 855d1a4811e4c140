"""`InferenceSession`: run an ONNX model on this package's ops, shaped like ONNX Runtime's.

How it works:

1. Creation: the model is loaded (`onnx_import.load`; a bad file is a ``ValueError``) and converted
   to the IR (`onnx_import.to_graph`). Every node's handler (`ops.OPS`) is then run once on the
   model's declared, possibly symbolic, input shapes: this infers the shapes of every tensor
   (``graph.tensors``), sets each node's ``kernel`` and refuses, with a ``NotImplementedError``
   naming the op, the node and the opset, anything the session could not run exactly. Nothing is
   computed from a model that gets past this point but cannot run.
2. Planning, once per input signature (backend, shape and dtype of every feed): the handlers run
   again on the concrete shapes. Shape data (Shape, Constant, and Gather / Slice / Cast /
   Concat / Unsqueeze... on it) is evaluated on the host here; every other node becomes a step
   that calls a public op. Liveness gives, for each step, the intermediates whose last reader it
   is, so they are released right after it (the memory returns to NumPy / CuPy's pool and the
   next allocations reuse it); `Plan.peak_bytes` is the largest total of live intermediates
   (views share their source's buffer; feeds and constants are not counted).
3. `run`: checks the feed, picks the plan and executes its steps, each inside an NVTX range
   ``node:<op_type>`` (domain ``pygpu_ops``) around the op's own range.

``optimize=True`` (the default) runs the graph passes (`pygpu_ops.ir.passes`: constant folding,
BatchNormalization folding, Conv + Relu into the conv epilogue, dead-node elimination) between
import and step 1's last walk, so ``session.graph`` is the optimized IR and its nodes' ``kernel``
name what runs; ``session.applied_passes`` lists the passes that changed it. ``optimize=False``
runs the graph as imported. ``layout="NHWC"`` then runs the layout pass (`pygpu_ops.ir.layout`)
on that graph: the CNN part channels-last, transposes at its edges.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._runtime import backends
from .._runtime.nvtx import op_range
from . import ops, passes
from .graph import Graph, Tensor, format_shape

_ORT_TYPES = {np.dtype(k): v for k, v in {
    np.float32: "float", np.float64: "double", np.float16: "float16", np.int64: "int64", np.int32: "int32",
    np.int16: "int16", np.int8: "int8", np.uint8: "uint8", np.uint16: "uint16", np.uint32: "uint32",
    np.uint64: "uint64", np.bool_: "bool"}.items()}


def ort_type(dtype) -> str:
    """ONNX Runtime's type string of a tensor element type, e.g. ``"tensor(float)"``."""
    return f"tensor({_ORT_TYPES.get(np.dtype(dtype), str(np.dtype(dtype)))})"


def declared_feeds(graph: Graph) -> Dict[str, "ops.Info"]:
    """The graph inputs as declared (shapes possibly symbolic), as the handlers see them."""
    return {n: ops.Info(graph.tensors[n].shape, graph.tensors[n].dtype) for n in graph.inputs}


def walk(graph: Graph, feeds: Dict[str, "ops.Info"], backend: str):
    """Every node's handler in order on ``feeds``: [(node, step)] and the Info of every tensor.
    An op or attribute the package cannot run is a ``NotImplementedError`` naming the op, the node
    and the opset; an inconsistent model a ``ValueError``."""
    ctx = ops.Ctx(graph.opset, backend)
    env: Dict[str, ops.Info] = dict(feeds)
    for name, arr in graph.initializers.items():
        env[name] = ops.Info(tuple(arr.shape), arr.dtype, arr, host=True)
    steps = []
    for node in graph.nodes:
        where = f"{node.op_type} node {node.name!r} (opset {graph.opset})"
        ins = [env[i] if i else None for i in node.inputs]
        try:
            step = passes.handler(node, graph.opset)(node, ins, ctx)
            if any(node.outputs[len(step.outs):]):
                raise ops.Unsupported(f"outputs {[o for o in node.outputs[len(step.outs):] if o]} are not supported")
        except ops.Unsupported as e:
            raise NotImplementedError(f"{where}: {e}") from None
        except (ValueError, TypeError, IndexError, KeyError) as e:
            raise ValueError(f"{where}: {e}") from None
        for o, info in zip(node.outputs, step.outs):
            if o:
                env[o] = info
        steps.append((node, step))
    return steps, env


@dataclass(frozen=True)
class NodeArg:
    """An input or output as ``get_inputs`` / ``get_outputs`` describe it (as ONNX Runtime's):
    ``shape`` holds ints, strings for named symbolic dimensions and None for unnamed ones."""

    name: str
    shape: List[Optional[object]]
    type: str


@dataclass
class PlanStep:
    node_name: str
    op_type: str
    kernel: str
    inputs: List[str]
    outputs: List[str]
    run: object
    frees: List[str] = field(default_factory=list)
    live_bytes: int = 0


@dataclass
class Plan:
    """The steps of one input signature, with the shapes they resolve to and the memory they need."""

    backend: str
    shapes: Dict[str, Tuple[int, ...]]
    steps: List[PlanStep]
    host_values: Dict[str, np.ndarray]
    peak_bytes: int
    device_constants: Dict[str, object] = field(default_factory=dict)

    def __str__(self) -> str:
        rows = [f"plan on {self.backend}: {len(self.steps)} kernel steps, peak {self.peak_bytes} bytes of intermediates"]
        for s in self.steps:
            outs = ", ".join(f"{o} {format_shape(self.shapes[o])}" for o in s.outputs if o)
            rows.append(f"  {s.op_type:<20} {s.kernel:<34} -> {outs:<40} live {s.live_bytes} B"
                        + (f"; frees {', '.join(s.frees)}" if s.frees else ""))
        return "\n".join(rows)


class InferenceSession:
    """Runs an ONNX model with pygpu_ops, as ``onnxruntime.InferenceSession`` does with its
    providers. ``model``: a path, the file's bytes or an ``onnx.ModelProto``. ``backend``:
    ``"auto"`` (CuPy / CUDA feeds run on ``cuda``, NumPy feeds on the default backend), ``"numpy"``,
    ``"emulator"`` or ``"cuda"``. ``optimize``: run the graph passes (`pygpu_ops.ir.passes.PASSES`)
    on the imported graph; False runs it as imported. ``layout``: ``"NCHW"`` (the model's own) or
    ``"NHWC"``: the CNN part runs on the channels-last kernels, with transposes only where image
    tensors enter or leave it (`pygpu_ops.ir.layout.to_nhwc`); feeds and outputs stay as the
    model declares them."""

    def __init__(self, model, *, backend: str = "auto", optimize: bool = True, layout: str = "NCHW"):
        from . import onnx_import

        if not isinstance(backend, str) or backend not in backends.BACKENDS + ("auto",):
            raise ValueError(f"InferenceSession: backend must be one of 'auto', "
                             f"{', '.join(repr(b) for b in backends.BACKENDS)}; got {backend!r}")
        if not isinstance(layout, str) or layout not in ("NCHW", "NHWC"):
            raise ValueError(f"InferenceSession: layout must be 'NCHW' or 'NHWC'; got {layout!r}")
        self.layout = layout
        if not isinstance(optimize, (bool, np.bool_)):
            raise TypeError(f"InferenceSession: optimize must be a bool; got {type(optimize).__name__}")
        if backend != "auto":
            backends.require(backend)
        self._backend = backend
        self.optimize = bool(optimize)
        self._declared: Dict[str, Tensor] = {}
        self.graph: Graph = onnx_import.to_graph(onnx_import.load(model))
        self._declared = {n: self.graph.tensors[n] for n in self.graph.inputs + self.graph.outputs
                          if n in self.graph.tensors}
        # The model's constants, for the feed check's message after the passes dropped some.
        self._model_initializers = frozenset(self.graph.initializers)
        for name in self.graph.inputs:
            if self.graph.tensors[name].shape is None:
                raise NotImplementedError(f"input {name!r} has no shape (not even a rank); the session needs one")
        label_backend = backend if backend != "auto" else backends.default_backend()
        self.applied_passes: List[str] = []
        if self.optimize:
            # The imported graph is walked first, so that an unsupported op is refused under its
            # own name even where a pass would have rewritten it.
            walk(self.graph, declared_feeds(self.graph), label_backend)
            self.graph, self.applied_passes = passes.optimize(self.graph)
        if layout == "NHWC":
            from .layout import to_nhwc

            if not self.optimize:   # refuse an unsupported op under its own name, as above
                walk(self.graph, declared_feeds(self.graph), label_backend)
            nhwc = to_nhwc(self.graph)
            if nhwc is not self.graph:
                self.graph = nhwc
                self.applied_passes.append("to_nhwc")
        steps, infos = self._walk(declared_feeds(self.graph), label_backend)
        for node, step in steps:
            node.kernel = step.kernel
        for name, info in infos.items():
            old = self.graph.tensors.get(name)
            self.graph.tensors[name] = Tensor(name, info.dtype, info.shape, info.layout or (old.layout if old else ""))
        self._plans: Dict[tuple, Plan] = {}
        self.last_plan: Optional[Plan] = None

    # -----------------------------------------------------------------------------------------
    # Introspection
    # -----------------------------------------------------------------------------------------
    def _arg(self, name: str) -> NodeArg:
        declared, inferred = self._declared.get(name), self.graph.tensors[name]
        shape = []
        src = declared if declared is not None and declared.shape is not None else inferred
        for i, d in enumerate(src.shape or ()):
            if isinstance(d, str) and d.startswith("?") and inferred.shape and not str(inferred.shape[i]).startswith("?"):
                d = inferred.shape[i]
            shape.append(None if isinstance(d, str) and (d.startswith("?") or "*" in d) else d)
        return NodeArg(name, shape, ort_type(src.dtype))

    def get_inputs(self) -> List[NodeArg]:
        return [self._arg(n) for n in self.graph.inputs]

    def get_outputs(self) -> List[NodeArg]:
        return [self._arg(n) for n in self.graph.outputs]

    # -----------------------------------------------------------------------------------------
    # Planning
    # -----------------------------------------------------------------------------------------
    def _walk(self, feeds: Dict[str, "ops.Info"], backend: str):
        return walk(self.graph, feeds, backend)

    def plan(self, shapes: Dict[str, Sequence[int]], backend: Optional[str] = None) -> Plan:
        """The plan for inputs of these shapes (dtypes as declared), built once and cached."""
        backend = backend or (self._backend if self._backend != "auto" else backends.default_backend())
        key = (backend,) + tuple(tuple(int(d) for d in shapes[n]) for n in self.graph.inputs)
        if key in self._plans:
            return self._plans[key]
        feeds = {n: ops.Info(tuple(int(d) for d in shapes[n]), self.graph.tensors[n].dtype) for n in self.graph.inputs}
        steps, infos = self._walk(feeds, backend)
        outputs = set(self.graph.outputs)
        host_values = {n: i.value for n, i in infos.items() if i.host and i.value is not None}
        plan_steps: List[PlanStep] = []
        for node, step in steps:
            if step.run is None:
                continue
            plan_steps.append(PlanStep(node.name, node.op_type, step.kernel, list(node.inputs),
                                       list(node.outputs[:len(step.outs)]), step.run))
        # Liveness: each runtime tensor is released after its last reader (or right away if unread).
        last: Dict[str, int] = {}
        for k, s in enumerate(plan_steps):
            for n in s.inputs + s.outputs:
                if n and n not in host_values:
                    last[n] = k
        for n, k in last.items():
            if n not in outputs and n not in self.graph.inputs:
                plan_steps[k].frees.append(n)
        # Memory: a buffer per non-view output; views alias their source's buffer.
        views = {node.name for node, step in steps if step.view}
        buffer_of: Dict[str, str] = {}
        size: Dict[str, int] = {}
        live: Dict[str, int] = {}     # buffer -> number of live tensors on it
        current = peak = 0
        for s in plan_steps:
            for o in s.outputs:
                if not o:
                    continue
                if s.node_name in views:
                    buffer_of[o] = buffer_of.get(s.inputs[0], s.inputs[0])
                else:
                    buffer_of[o] = o
                    size[o] = int(np.prod(infos[o].shape, dtype=np.int64)) * infos[o].dtype.itemsize
                    current += size[o]
                live[buffer_of[o]] = live.get(buffer_of[o], 0) + 1
            peak = max(peak, current)
            s.live_bytes = current
            for n in s.frees:
                b = buffer_of.get(n, n)
                live[b] = live.get(b, 1) - 1
                if live[b] == 0:
                    current -= size.get(b, 0)
        shapes_out = {n: tuple(int(d) for d in i.shape) for n, i in infos.items() if i.shape is not None}
        p = Plan(backend, shapes_out, plan_steps, host_values, peak)
        self._plans[key] = p
        return p

    # -----------------------------------------------------------------------------------------
    # Running
    # -----------------------------------------------------------------------------------------
    def _check_feed(self, input_feed) -> Tuple[str, Dict[str, object], Dict[str, Tuple[int, ...]]]:
        if not isinstance(input_feed, dict):
            raise TypeError(f"run: input_feed must be a dict of input name -> array; got {type(input_feed).__name__}")
        names = self.graph.inputs
        for n in input_feed:
            if n not in names:
                what = "an initializer (a constant of the model)" if n in self._model_initializers else "not an input"
                raise ValueError(f"run: input_feed has {n!r}, which is {what}; inputs are {names}")
        missing = [n for n in names if n not in input_feed]
        if missing:
            raise ValueError(f"run: input {missing[0]!r} is missing from input_feed; inputs are {names}")
        backend = backends.resolve("InferenceSession.run", self._backend,
                                   {f"input_feed[{n!r}]": input_feed[n] for n in names})
        dev = None
        if backend == "cuda":
            from .._runtime.device import get_device

            dev = get_device("cuda")
        arrays, shapes, symbols = {}, {}, {}
        for n in names:
            x = input_feed[n] if dev is None else dev.asarray(input_feed[n])
            decl = self.graph.tensors[n]
            if np.dtype(x.dtype) != decl.dtype:
                raise TypeError(f"run: input {n!r} has dtype {np.dtype(x.dtype)} ({ort_type(x.dtype)}); "
                                f"expected {decl.dtype} ({ort_type(decl.dtype)})")
            shape = tuple(int(d) for d in x.shape)
            if len(shape) != len(decl.shape):
                raise ValueError(f"run: input {n!r} has shape {shape}; expected rank {len(decl.shape)}: "
                                 f"{format_shape(decl.shape)}")
            for i, (got, want) in enumerate(zip(shape, decl.shape)):
                if isinstance(want, int) and got != want:
                    raise ValueError(f"run: input {n!r} has shape {shape}; dimension {i} must be {want} "
                                     f"({format_shape(decl.shape)})")
                if isinstance(want, str) and not want.startswith("?"):
                    if symbols.setdefault(want, (got, n))[0] != got:
                        raise ValueError(f"run: input {n!r} has {want} = {got} (dimension {i}) but input "
                                         f"{symbols[want][1]!r} has {want} = {symbols[want][0]}")
            arrays[n], shapes[n] = x, shape
        return backend, arrays, shapes

    def run(self, output_names, input_feed, run_options=None) -> list:
        """The outputs named in ``output_names`` (None: all, in the graph's order) for ``input_feed``
        (input name -> array); arrays of the backend's kind. ``run_options`` is accepted for
        ONNX Runtime compatibility and ignored."""
        if output_names is None:
            output_names = list(self.graph.outputs)
        if isinstance(output_names, str) or not all(isinstance(n, str) for n in output_names):
            raise TypeError(f"run: output_names must be a list of names or None; got {output_names!r}")
        for n in output_names:
            if n not in self.graph.outputs:
                raise ValueError(f"run: {n!r} is not an output of the model; outputs are {self.graph.outputs}")
        backend, arrays, shapes = self._check_feed(input_feed)
        plan = self.plan(shapes, backend)
        self.last_plan = plan
        to_backend = self._uploader(backend)
        env = dict(arrays)
        for s in plan.steps:
            args = []
            for n in s.inputs:
                if not n:
                    args.append(None)
                elif n in env:
                    args.append(env[n])
                else:   # a constant: uploaded once per plan
                    if n not in plan.device_constants:
                        plan.device_constants[n] = to_backend(plan.host_values[n])
                    args.append(plan.device_constants[n])
            with op_range("node", s.op_type):
                results = s.run(args)
            for o, r in zip(s.outputs, results):
                if o:
                    env[o] = r
            for n in s.frees:
                env.pop(n, None)
        return [env[n] if n in env else to_backend(plan.host_values[n]) for n in output_names]

    @staticmethod
    def _uploader(backend: str):
        if backend != "cuda":
            # np.require, not ascontiguousarray: that makes a 0-d constant (a scalar Gather index) 1-d
            return lambda v: np.require(v, requirements="C")
        from .._runtime.device import get_device

        dev = get_device("cuda")
        return dev.upload      # a host-to-device copy (asarray would take the NumPy array for a tensor)
