"""Bad input gets a clear ValueError or TypeError, never another exception, a crash or a hang:
random parameters (negative, zero, huge, wrong types) thrown at every op on the CPU backends."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import pygpu_ops as po
from pygpu_ops._runtime import backends

BACKENDS = [b for b in ("numpy", "emulator") if backends.problem(b) is None]

junk = st.one_of(st.integers(-3, 9), st.sampled_from([None, "same", "valid", "x", 2.5, (1, 2), (0, 1), (-1, 1),
                                                       (1, 2, 3), True, np.int64(2), [1, 1]]))
# Mostly near-valid tensors (4-D and 3-D with small sizes, the common dtypes) so that the random
# parameters reach the deeper checks, plus arbitrary shapes and dtypes.
near = st.one_of(st.tuples(*[st.integers(1, 5)] * 4), st.tuples(*[st.integers(1, 6)] * 3),
                 st.tuples(*[st.integers(1, 9)] * 2))
shapes = st.one_of(near, near, st.lists(st.integers(0, 6), min_size=0, max_size=5).map(tuple))
dtypes = st.one_of(st.sampled_from([np.float32, np.int8]),
                   st.sampled_from([np.float32, np.float64, np.int8, np.uint8, np.int32, np.int64, np.float16, np.bool_]))


def _arr(shape, dtype):
    return (np.arange(int(np.prod(shape))) % 7 - 3).astype(dtype).reshape(shape)


OPS = {
    "conv2d": lambda x, w, p, b: po.conv2d(x, w, stride=p[0], padding=p[1], dilation=p[2], groups=p[3], backend=b),
    "conv1d": lambda x, w, p, b: po.conv1d(x, w, stride=p[0], padding=p[1], dilation=p[2], groups=p[3], backend=b),
    "im2col": lambda x, w, p, b: po.im2col(x, p[0], stride=p[1], padding=p[2], dilation=p[3], backend=b),
    "max_pool2d": lambda x, w, p, b: po.max_pool2d(x, p[0], p[1], p[2], p[3], backend=b),
    "avg_pool2d": lambda x, w, p, b: po.avg_pool2d(x, p[0], p[1], p[2], backend=b),
    "softmax": lambda x, w, p, b: po.softmax(x, axis=p[0], backend=b),
    "log_softmax": lambda x, w, p, b: po.log_softmax(x, axis=p[0], backend=b),
    "relu": lambda x, w, p, b: po.relu(x, backend=b),
    "leaky_relu": lambda x, w, p, b: po.leaky_relu(x, p[0], backend=b),
    "gemm": lambda x, w, p, b: po.gemm(x, w, alpha=p[0], beta=p[1], trans_a=p[2], variant=p[3], backend=b),
    "matmul": lambda x, w, p, b: po.matmul(x, w, backend=b),
    "quantize": lambda x, w, p, b: po.quantize(x, p[0], p[1], axis=p[2], backend=b),
    "dequantize": lambda x, w, p, b: po.dequantize(x, p[0], p[1], axis=p[2], backend=b),
    "quant_params": lambda x, w, p, b: po.quant_params(x, axis=p[0], backend=b),
    "int8_gemm": lambda x, w, p, b: po.int8_gemm(x, w, a_zero_point=p[0], b_zero_point=p[1], backend=b),
    "nchw_to_nhwc": lambda x, w, p, b: po.nchw_to_nhwc(x, backend=b),
}


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", sorted(OPS))
@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(xs=shapes, xd=dtypes, ws=shapes, wd=dtypes, params=st.tuples(junk, junk, junk, junk))
def test_only_value_or_type_errors(backend, op, xs, xd, ws, wd, params):
    x, w = _arr(xs, xd), _arr(ws, wd)
    try:
        with np.errstate(all="ignore"):
            OPS[op](x, w, params, backend)
    except (ValueError, TypeError) as exc:
        assert str(exc), f"{op}: an error without a message"
