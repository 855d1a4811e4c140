"""The operator IR and the model runner: `graph` (the IR), `onnx_import` (ONNX -> IR), `ops` (one
handler per op, keyed by op type and opset range) and `session` (`InferenceSession`).

Importing this package imports neither ``onnx`` nor CuPy; `onnx_import` imports ``onnx`` when a
model is loaded.
"""
from .graph import Graph, Node, Tensor

__all__ = ["Graph", "Node", "Tensor"]
