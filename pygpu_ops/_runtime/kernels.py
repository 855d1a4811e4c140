"""The registry of every kernel instantiation the API can launch.

Op modules declare their kernels here at import time; the runtime builds one module per source
file from the registry (all of that file's instantiations as ``name_expressions``), and the offline
compile gate compiles exactly the registered set. Adding a kernel is one `register` call.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Tuple

#: Options every compiler gets: CuPy's RawModule, the NVRTC compile gate and the emulator.
BASE_OPTIONS: Tuple[str, ...] = ("-std=c++17",)


@dataclass(frozen=True)
class Kernel:
    """One launchable kernel: a ``__global__`` symbol (with template arguments) in a ``.cu`` file.

    ``source`` is relative to ``cuda_src/``. ``defines`` become ``-D`` options of the module.
    ``no_spill`` makes the compile gate fail when ptxas reports spill stores or loads.
    """

    source: str
    symbol: str
    template_args: Tuple = ()
    defines: Tuple[Tuple[str, str], ...] = ()
    no_spill: bool = False
    meta: Dict = field(default_factory=dict, compare=False, hash=False)

    @property
    def name_expression(self) -> str:
        if not self.template_args:
            return self.symbol
        return f"{self.symbol}<{', '.join(str(a) for a in self.template_args)}>"

    @property
    def module_key(self) -> Tuple[str, Tuple[Tuple[str, str], ...]]:
        return (self.source, self.defines)

    def options(self, extra: Tuple[str, ...] = ()) -> Tuple[str, ...]:
        return BASE_OPTIONS + tuple(f"-D{k}={v}" for k, v in self.defines) + tuple(extra)


REGISTRY: Dict[str, Kernel] = {}


def register(kernel: Kernel) -> Kernel:
    """Add ``kernel`` (idempotent) and return it."""
    prev = REGISTRY.get(kernel.name_expression + repr(kernel.module_key))
    if prev is not None and prev != kernel:
        raise ValueError(f"kernel {kernel.name_expression} registered twice with different settings")
    REGISTRY[kernel.name_expression + repr(kernel.module_key)] = kernel
    return kernel


def module_name_expressions(kernel: Kernel) -> Tuple[str, ...]:
    """Every registered instantiation that shares ``kernel``'s module, in registration order."""
    return tuple(k.name_expression for k in REGISTRY.values() if k.module_key == kernel.module_key)


#: The op-family modules of the package; importing one registers its kernels.
OP_MODULES: Tuple[str, ...] = (
    "pygpu_ops.linalg",
    "pygpu_ops.conv",
    "pygpu_ops.activations",
    "pygpu_ops.normalization",
    "pygpu_ops.pooling",
    "pygpu_ops.quantization",
    "pygpu_ops.elementwise",
    "pygpu_ops.recurrent",
    "pygpu_ops.indexing",
)


def all_kernels() -> Tuple[Kernel, ...]:
    """Import every op module (so each registers its kernels) and return the registry."""
    import importlib

    for name in OP_MODULES:
        importlib.import_module(name)
    return tuple(REGISTRY.values())


def ceil_div(a: int, b: int) -> int:
    return -(-a // b)
