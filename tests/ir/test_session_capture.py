"""Every node of a session on ``cuda`` runs in CuPy's current stream, with no host round trip
between nodes: a whole ``run`` is captured into a CUDA graph on the fake CuPy
(tests/_runtime/fake_cupy.py), whose capturing stream refuses what a real one refuses (a
device-to-host copy, ``.get()``, a host-to-device ``asarray``, a device synchronize) and records
every kernel launch instead of running it. Replaying the graph must then give the outputs of the
numpy backend. The first, uncaptured run compiles the kernels and builds the plan, as a user's
warm-up run would."""
from __future__ import annotations

import numpy as np
import pytest

import pygpu_ops as po

from .helpers import rand
from .test_models import mobilenet_block_model, resnet_block_model

pytestmark = pytest.mark.emulator


def _captured_run(fake_cupy, m, x):
    sess = po.InferenceSession(m.SerializeToString(), backend="cuda")
    xd = fake_cupy.asarray(x)
    sess.run(None, {"x": xd})                       # warm-up: compiles, plans
    stream = fake_cupy.cuda.Stream(non_blocking=True)
    launches = fake_cupy._state["kernels_run"]
    with stream:
        stream.begin_capture()
        outs = sess.run(None, {"x": xd})
        graph = stream.end_capture()
    assert fake_cupy._state["kernels_run"] == launches, "a kernel ran during the capture instead of being recorded"
    for o in outs:                                  # allocated during the capture, not yet written
        o[...] = np.nan
    graph.launch(stream)
    assert fake_cupy._state["kernels_run"] > launches
    return sess, [np.asarray(o.get()) for o in outs]


@pytest.mark.parametrize("build", [resnet_block_model, mobilenet_block_model], ids=["resnet", "mobilenet"])
def test_run_captures_into_one_graph(fake_cupy, build):
    m = build()
    x = rand(2, 3, 32, 32, seed=31)
    sess, got = _captured_run(fake_cupy, m, x)
    want = po.InferenceSession(m.SerializeToString(), backend="numpy").run(None, {"x": x})
    assert len(got) == len(want)
    for name, g, w in zip(sess.graph.outputs, got, want):
        assert g.shape == w.shape and g.dtype == w.dtype, name
        np.testing.assert_allclose(g, w, rtol=1e-4, atol=1e-5 * max(1.0, float(np.abs(w).max())), err_msg=name)

