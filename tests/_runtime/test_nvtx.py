"""op_range: one reusable NVTX range object per name where nvtx is installed."""
import pytest

from pygpu_ops._runtime import nvtx


def test_ranges_are_reused_and_reenterable():
    pytest.importorskip("nvtx")
    r = nvtx.op_range("gemm", "numpy")
    assert r is nvtx.op_range("gemm", "numpy") and r is not nvtx.op_range("gemm", "tiled")
    for _ in range(3):          # the same object entered again, and nested with another name
        with r:
            with nvtx.op_range("relu", "numpy"):
                pass
