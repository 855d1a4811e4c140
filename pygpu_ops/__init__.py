"""pygpu_ops: hand-written CUDA kernels behind a small NumPy-style op API.

Each op runs on one of three backends (see ``available_backends()``): ``"numpy"`` (the CPU
fallback), ``"emulator"`` (the real ``.cu`` kernels and launch code executed on the CPU, with
race, barrier and bounds checks) and ``"cuda"`` (the kernels on the GPU through CuPy).
Importing the package imports no CuPy and compiles nothing. ``InferenceSession`` (the ONNX model
runner, `pygpu_ops.ir`) is loaded on first use, so ``import pygpu_ops`` does not import ``onnx``.
"""
from ._runtime.backends import BackendUnavailableError, available_backends, use_backend
from .activations import leaky_relu, relu
from .conv import (conv1d, conv2d, get_column_buffer_limit, im2col, nchw_to_nhwc, nhwc_to_nchw,
                   set_column_buffer_limit)
from .indexing import embedding, gather
from .elementwise import add, batch_norm, clip, concat, div, mul, sigmoid, sub, tanh, transpose
from .linalg import gemm, matmul, sgemm_variants
from .normalization import log_softmax, softmax, softmax_variants
from .pooling import avg_pool2d, global_avg_pool2d, max_pool2d
from .recurrent import gru, lstm, rnn
from .quantization import (dequantize, int8_gemm, int8_gemm_variants, qconv2d, qlinear_matmul, quant_params,
                           quantize)

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "InferenceSession",
    "add",
    "batch_norm",
    "clip",
    "concat",
    "div",
    "mul",
    "sigmoid",
    "sub",
    "tanh",
    "transpose",
    "embedding",
    "gather",
    "available_backends",
    "conv1d",
    "conv2d",
    "get_column_buffer_limit",
    "im2col",
    "leaky_relu",
    "nchw_to_nhwc",
    "nhwc_to_nchw",
    "relu",
    "set_column_buffer_limit",
    "avg_pool2d",
    "global_avg_pool2d",
    "log_softmax",
    "max_pool2d",
    "softmax",
    "softmax_variants",
    "dequantize",
    "gemm",
    "int8_gemm",
    "int8_gemm_variants",
    "matmul",
    "qconv2d",
    "qlinear_matmul",
    "quant_params",
    "quantize",
    "sgemm_variants",
    "use_backend",
    "gru",
    "lstm",
    "rnn",
    "quantize_model",
]


def __getattr__(name):
    # The model runner is imported on first use: it pulls in the IR and, when a model is loaded, onnx.
    if name == "InferenceSession":
        from .ir.session import InferenceSession

        return InferenceSession
    if name == "quantize_model":
        from .ir.quantize import quantize_model

        return quantize_model
    raise AttributeError(f"module 'pygpu_ops' has no attribute {name!r}")
