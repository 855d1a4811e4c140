"""The architectures of torchvision's ResNet-18 and MobileNetV2, at small sizes, built with
onnx.helper (so no PyTorch is needed) and run through InferenceSession against ONNX Runtime CPU.

- ResNet-style: a stem Conv+BN+Relu, MaxPool k3 s2 p1, a basic block (two 3x3 Conv+BN, residual
  Add, Relu), a downsampling block whose shortcut is a strided 1x1 Conv+BN, then
  GlobalAveragePool, Flatten and Gemm (logits), and Softmax (probabilities) as a second output.
- MobileNetV2-style: inverted residual blocks: pointwise expand Conv+BN+Clip(0, 6), depthwise 3x3
  Conv (group = channels)+BN+Clip(0, 6), pointwise project Conv+BN, residual Add where the shape
  allows (stride 1), then GlobalAveragePool, Flatten, Gemm. Clip takes min/max as inputs from
  opset 11 and as attributes before, so both forms are built.

Input 2 x 3 x 32 x 32 with a symbolic batch; a few channels, so the emulator runs them in seconds.
"""
from __future__ import annotations

import numpy as np
import pytest

from .helpers import helper, model, ort_run, rand

import pygpu_ops as po
from pygpu_ops._runtime import backends

mk = helper.make_node


@pytest.fixture(params=[pytest.param("numpy", id="numpy"),
                        pytest.param("emulator", id="emulator", marks=pytest.mark.emulator),
                        pytest.param("cuda", id="cuda", marks=pytest.mark.gpu)])
def model_backend(request):
    why = backends.problem(request.param)
    if why is not None:
        pytest.skip(f"backend {request.param!r} unavailable: {why}")
    return request.param


class _Builder:
    """Collects nodes and initializers; each helper returns the name of its output tensor."""

    def __init__(self, opset: int):
        self.opset, self.nodes, self.inits, self._seed = opset, [], {}, 10

    def _w(self, name, arr):
        self.inits[name] = arr
        return name

    def _rand(self, *shape, scale=1.0):
        self._seed += 1
        return (rand(*shape, seed=self._seed) * np.float32(scale)).astype(np.float32)

    def conv_bn(self, x, name, cin, cout, k, stride=1, group=1, act=None):
        """Conv (no bias, as torchvision's) -> BatchNormalization -> Relu / Clip(0, 6) / nothing."""
        fan_in = cin // group * k * k
        w = self._w(f"{name}.w", self._rand(cout, cin // group, k, k, scale=np.sqrt(2.0 / fan_in)))
        p = k // 2
        self.nodes.append(mk("Conv", [x, w], [f"{name}.c"], kernel_shape=[k, k], strides=[stride, stride],
                             pads=[p, p, p, p], group=group, name=f"{name}.conv"))
        self._seed += 1
        rng = np.random.default_rng(self._seed)
        bn = [self._w(f"{name}.{t}", v.astype(np.float32)) for t, v in (
            ("gamma", rng.uniform(0.5, 1.5, cout)), ("beta", rng.uniform(-0.2, 0.2, cout)),
            ("mean", rng.uniform(-0.3, 0.3, cout)), ("var", rng.uniform(0.5, 2.0, cout)))]
        self.nodes.append(mk("BatchNormalization", [f"{name}.c"] + bn, [f"{name}.bn"], epsilon=1e-5,
                             name=f"{name}.bn"))
        out = f"{name}.bn"
        if act == "relu":
            self.nodes.append(mk("Relu", [out], [f"{name}.relu"], name=f"{name}.relu"))
            out = f"{name}.relu"
        elif act == "relu6":
            out = self.relu6(out, name)
        return out

    def relu6(self, x, name):
        if self.opset >= 11:
            lo = self._w("clip.min", np.array(0.0, np.float32))
            hi = self._w("clip.max", np.array(6.0, np.float32))
            self.nodes.append(mk("Clip", [x, lo, hi], [f"{name}.relu6"], name=f"{name}.relu6"))
        else:
            self.nodes.append(mk("Clip", [x], [f"{name}.relu6"], min=0.0, max=6.0, name=f"{name}.relu6"))
        return f"{name}.relu6"

    def add(self, a, b, name, relu=False):
        self.nodes.append(mk("Add", [a, b], [f"{name}.add"], name=f"{name}.add"))
        if not relu:
            return f"{name}.add"
        self.nodes.append(mk("Relu", [f"{name}.add"], [f"{name}.out"], name=f"{name}.relu"))
        return f"{name}.out"

    def head(self, x, cin, classes, out="logits"):
        fc_w = self._w("fc.w", self._rand(classes, cin, scale=1.0 / np.sqrt(cin)))
        fc_b = self._w("fc.b", self._rand(classes, scale=0.1))
        self.nodes += [mk("GlobalAveragePool", [x], ["gap"], name="gap"),
                       mk("Flatten", ["gap"], ["flat"], axis=1, name="flatten"),
                       mk("Gemm", ["flat", fc_w, fc_b], [out], transB=1, name="fc")]
        return out


def resnet_block_model(opset=13):
    b = _Builder(opset)
    x = b.conv_bn("x", "stem", 3, 8, 3, act="relu")
    b.nodes.append(mk("MaxPool", [x], ["pool"], kernel_shape=[3, 3], strides=[2, 2], pads=[1, 1, 1, 1],
                      name="maxpool"))
    # basic block, identity shortcut
    y = b.conv_bn("pool", "l1.conv1", 8, 8, 3, act="relu")
    y = b.conv_bn(y, "l1.conv2", 8, 8, 3)
    x = b.add(y, "pool", "l1", relu=True)
    # downsampling block: stride 2 and a 1x1 stride-2 Conv+BN shortcut
    y = b.conv_bn(x, "l2.conv1", 8, 16, 3, stride=2, act="relu")
    y = b.conv_bn(y, "l2.conv2", 16, 16, 3)
    s = b.conv_bn(x, "l2.down", 8, 16, 1, stride=2)
    x = b.add(y, s, "l2", relu=True)
    b.head(x, 16, 10)
    b.nodes.append(mk("Softmax", ["logits"], ["probs"], axis=1, name="softmax"))
    return model(b.nodes, {"x": rand(2, 3, 32, 32)}, {"logits": 2, "probs": 2}, b.inits, opset=opset,
                 input_shapes={"x": ["N", 3, 32, 32]})


def mobilenet_block_model(opset=13):
    b = _Builder(opset)
    x = b.conv_bn("x", "stem", 3, 8, 3, stride=2, act="relu6")                  # 16 x 16

    def inverted_residual(x, name, cin, cout, stride, expand=4):
        hidden = cin * expand
        y = b.conv_bn(x, f"{name}.expand", cin, hidden, 1, act="relu6")
        y = b.conv_bn(y, f"{name}.dw", hidden, hidden, 3, stride=stride, group=hidden, act="relu6")
        y = b.conv_bn(y, f"{name}.project", hidden, cout, 1)                    # linear bottleneck
        return b.add(y, x, name) if stride == 1 and cin == cout else y

    x = inverted_residual(x, "b1", 8, 8, 1)
    x = inverted_residual(x, "b2", 8, 12, 2)                                    # 8 x 8, no residual
    x = inverted_residual(x, "b3", 12, 12, 1)
    b.head(x, 12, 10)
    return model(b.nodes, {"x": rand(2, 3, 32, 32)}, {"logits": 2}, b.inits, opset=opset,
                 input_shapes={"x": ["N", 3, 32, 32]})


def _compare(m, backend, x):
    sess = po.InferenceSession(m.SerializeToString(), backend=backend)
    got = [g.get() if hasattr(g, "get") else np.asarray(g) for g in sess.run(None, {"x": x})]
    want = ort_run(m, {"x": x})
    assert len(got) == len(want)
    for name, g, w in zip(sess.graph.outputs, got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, f"{name}: {g.shape} {g.dtype} vs ORT {w.shape} {w.dtype}"
        scale = max(1.0, float(np.abs(w).max()))
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * scale, err_msg=f"{name} vs ONNX Runtime")
    return sess, got


def test_resnet_block(model_backend):
    m = resnet_block_model()
    sess, (logits, probs) = _compare(m, model_backend, rand(2, 3, 32, 32, seed=5))
    assert logits.shape == (2, 10) and np.allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    ops = [n.op_type for n in sess.graph.nodes]
    assert {"FusedAdd", "MaxPool", "GlobalAveragePool", "Gemm"} <= set(ops)   # the residual Add + Relu fused
    # the logits carry signal: not all equal (a broken residual path tends to flatten them)
    assert float(np.ptp(logits)) > 1e-2


@pytest.mark.parametrize("opset", [10, 13], ids=["clip-attrs", "clip-inputs"])
def test_mobilenet_block(model_backend, opset):
    m = mobilenet_block_model(opset)
    sess, (logits,) = _compare(m, model_backend, rand(2, 3, 32, 32, seed=6))
    assert logits.shape == (2, 10) and float(np.ptp(logits)) > 1e-2
    groups = [n.attrs.get("group", 1) for n in sess.graph.nodes if n.op_type in ("Conv", "FusedConv")]
    assert {32, 48} <= set(groups), groups     # the depthwise convolutions are in the graph
    # every Clip(0, 6) follows a Conv (after BN folding): all run in the conv epilogue as relu6
    assert "Clip" not in [n.op_type for n in sess.graph.nodes]


def test_dynamic_batch_resnet_block():
    """One session, two batch sizes; a sample's result does not depend on the rest of its batch."""
    m = resnet_block_model()
    sess = po.InferenceSession(m.SerializeToString(), backend="numpy")
    x = rand(3, 3, 32, 32, seed=9)
    y3 = sess.run(["logits"], {"x": x})[0]
    y1 = sess.run(["logits"], {"x": x[2:3]})[0]
    np.testing.assert_allclose(y3, ort_run(m, {"x": x})[0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(y1[0], y3[2], rtol=1e-5, atol=1e-6)
