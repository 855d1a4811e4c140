"""Asymmetric pads and auto_pad SAME at stride 2 in Conv / MaxPool / AveragePool models, on numpy and
the emulator, against ONNX Runtime CPU (``check``): begin != end on both axes, with ceil_mode and
count_include_pad, where ONNX Runtime's divisor (the window clipped to the input plus the end pad)
and its ceil_mode rule (a window starting past the input plus the begin pad is dropped) show."""
from __future__ import annotations

import pytest

from .helpers import check, helper, model, rand

mk = helper.make_node

POOL_ATTRS = [
    dict(kernel_shape=[3, 3], pads=[0, 0, 1, 1], strides=[2, 2]),
    dict(kernel_shape=[3, 3], pads=[1, 2, 0, 1]),
    dict(kernel_shape=[4, 3], pads=[1, 2, 0, 1], strides=[2, 2], ceil_mode=1),
    dict(kernel_shape=[3, 3], auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(kernel_shape=[3, 2], auto_pad="SAME_LOWER", strides=[2, 2]),
    dict(kernel_shape=[2, 3], pads=[1, 0, 1, 2], strides=[3, 2], ceil_mode=1),
]
POOL_IDS = ["0011_s2", "1201", "1201_ceil", "same_upper_s2", "same_lower_s2", "1012_ceil_s3"]


@pytest.mark.parametrize("shape", [(1, 2, 6, 7), (2, 3, 5, 5)], ids=["6x7", "5x5"])
@pytest.mark.parametrize("attrs", POOL_ATTRS, ids=POOL_IDS)
def test_max_pool(host_backend, attrs, shape):
    x = rand(*shape)
    check(model([mk("MaxPool", ["x"], ["y"], **attrs)], {"x": x}, {"y": 4}, opset=12), {"x": x}, host_backend,
          rtol=0, atol=0)


@pytest.mark.parametrize("include", [0, 1], ids=["exclude_pad", "include_pad"])
@pytest.mark.parametrize("shape", [(1, 2, 6, 7), (2, 3, 5, 5)], ids=["6x7", "5x5"])
@pytest.mark.parametrize("attrs", POOL_ATTRS, ids=POOL_IDS)
def test_average_pool(host_backend, attrs, shape, include):
    x = rand(*shape)
    m = model([mk("AveragePool", ["x"], ["y"], count_include_pad=include, **attrs)], {"x": x}, {"y": 4}, opset=19)
    check(m, {"x": x}, host_backend)


@pytest.mark.parametrize("attrs", [
    dict(pads=[0, 0, 1, 1], strides=[2, 2]), dict(pads=[1, 2, 0, 1]), dict(auto_pad="SAME_UPPER", strides=[2, 2]),
    dict(auto_pad="SAME_LOWER", strides=[2, 2], group=2),
], ids=["0011_s2", "1201", "same_upper_s2", "same_lower_s2_g2"])
def test_conv_then_pool(host_backend, attrs):
    """A TF-style stem: Conv with SAME pads at stride 2, then a SAME max pool at stride 2 (opset 9)."""
    x = rand(1, 4, 9, 8)
    m = model([mk("Conv", ["x", "w", "b"], ["c"], **attrs),
               mk("MaxPool", ["c"], ["y"], kernel_shape=[3, 3], strides=[2, 2], auto_pad="SAME_UPPER")],
              {"x": x}, {"y": 4}, {"w": rand(6, 4 // attrs.get("group", 1), 3, 3, seed=1), "b": rand(6, seed=2)},
              opset=9)
    check(m, {"x": x}, host_backend)
