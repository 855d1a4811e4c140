"""ONNX ``ConstantOfShape`` (opset 9+): a tensor of one repeated value, its shape given as data.

PyTorch's TorchScript exporter writes it for the zero initial states of ``nn.LSTM`` / ``GRU`` /
``RNN`` called without ``h0``: ``Shape(x) -> Gather -> Unsqueeze -> Concat -> ConstantOfShape``,
the batch dimension read from the input. The shape is shape data, so the node is a host step: at
session creation (a symbolic batch) only the output's shape and dtype are known; once the plan's
shapes are, the value is ``np.full(shape, value)``, made on the host while the plan is built and
uploaded once per plan like the other constants of the plan. This suits the small tensors exporters
emit there (states of B x H values); a large fill is a host allocation plus one upload per input
signature, not a kernel.

Limits: the ``shape`` input must be shape data or a constant (a runtime tensor is refused at
session creation); ``value`` must hold exactly one element (float32 0 when omitted, as ONNX says).
"""
from __future__ import annotations

import numpy as np

from .graph import unknown_dim
from .ops import F32, Info, Unsupported, _host_step, _host_value, _ints, register


@register("ConstantOfShape", 9)
def constant_of_shape(node, ins, ctx):
    shape_info = ins[0]
    value = np.asarray(node.attr("value", np.zeros(1, F32)))
    if value.size != 1:
        raise ValueError(f"value must hold one element; got shape {value.shape}")
    if shape_info.dtype.kind not in "iu":
        raise ValueError(f"input shape must be an integer tensor; got {shape_info.dtype}")
    if shape_info.rank != 1:
        raise ValueError(f"input shape must be 1-D; got shape {shape_info.shape}")
    dims = _host_value(shape_info, "shape")
    fill = value.reshape(())
    if dims is None:       # the shape data is not known yet, only its length (the output's rank)
        n = shape_info.shape[0]
        if not isinstance(n, int):
            raise Unsupported("input shape of unknown length (an output of unknown rank)")
        return _host_step([Info(tuple(unknown_dim() for _ in range(n)), value.dtype)], "constant_of_shape")
    dims = np.asarray(dims).reshape(-1)
    if any(not isinstance(d, (int, np.integer)) for d in dims):   # a symbolic dimension: open until planned
        return _host_step([Info(tuple(d if isinstance(d, str) else int(d) for d in dims), value.dtype)],
                          "constant_of_shape")
    shape = tuple(_ints(dims))
    if any(d < 0 for d in shape):
        raise ValueError(f"input shape {list(shape)} has a negative dimension")
    return _host_step([Info(shape, value.dtype, np.full(shape, fill, dtype=value.dtype))], "constant_of_shape")
