"""ONNX Gather on tensors of the model (an embedding table indexed by token ids): a device step.

`ops.gather` keeps evaluating Gather on the host where both inputs are host integer data (the
shape subgraphs exporters emit); every other Gather comes here and runs ``po.gather``, the
``gather_rows`` kernel (``cuda_src/embedding/gather_rows.cu``) on the session's backend. The usual
case is an embedding initializer (a host constant, uploaded once per plan) gathered along axis 0 by
int64 ids from a graph input; any axis, any index shape and any 1/2/4/8/16-byte element dtype run
the same way. Negative indices count from the end (ONNX); an index out of range is a
``ValueError`` naming ``indices``: at session creation when the indices are a constant, else from
``run`` (the kernel records it on the device and the launcher raises after it).
"""
from __future__ import annotations

import numpy as np

from .ops import Info, Step, Unsupported, _axis, public_op

_INDEX_DTYPES = (np.dtype(np.int32), np.dtype(np.int64))


def gather_device(node, ins, ctx) -> Step:
    data, idx = ins
    if data.rank is None or idx.rank is None:
        raise Unsupported("Gather on a tensor of unknown rank")
    if data.rank == 0:
        raise ValueError("data must have rank >= 1; got a scalar")
    if idx.dtype not in _INDEX_DTYPES:
        raise ValueError(f"indices have dtype {idx.dtype}; ONNX Gather takes int32 or int64")
    if data.dtype.kind not in "biufc":
        raise Unsupported(f"Gather on {data.dtype} data; supported: boolean, integer, floating and complex")
    axis = _axis(int(node.attr("axis", 0)), data.rank)
    n = data.shape[axis]
    if idx.host and idx.value is not None and isinstance(n, int):
        ind = np.asarray(idx.value)
        bad = (ind < -n) | (ind >= n)
        if bad.any():
            raise ValueError(f"indices hold {int(ind[bad].reshape(-1)[0])}, out of range for axis {axis} of size {n}")
    shape = data.shape[:axis] + idx.shape + data.shape[axis + 1:]
    fn = public_op("gather")
    from ..indexing import VARIANT

    return Step([Info(shape, data.dtype)], ctx.label("gather", VARIANT),
                lambda a: [fn(a[0], a[1], axis, backend=ctx.backend)])
