"""Occupancy of a launch, computed the way the CUDA toolkit's ``cuda_occupancy.h`` does.

``cudaOccMaxActiveBlocksPerMultiprocessor`` takes the smallest of four per-SM block limits; the
rules below are the header's (CUDA 13.0), restated, for sm_75, sm_80, sm_86, sm_89 and sm_90:

* **warps**: a block occupies ``ceil(threads / 32)`` warp slots (a 33-thread block takes two);
  limit = ``max_warps_per_sm // warps_per_block``.
* **blocks**: the architecture's resident-block cap (16, 32, 16, 24, 32).
* **registers**: registers are allocated per warp, ``regs_per_thread * 32`` rounded up to the
  256-register unit (the same as rounding the per-thread count up to a multiple of 8). The
  65,536-register file is split over 4 sub-partitions, and a warp lives in one, so
  ``warps_per_sm = 4 * ((65536 / 4) // regs_per_warp)``; limit = that ``// warps_per_block``.
  The hardware also refuses a block whose warps, rounded up to a multiple of 4, would need more
  than the 65,536 registers a block may hold: such a launch gets 0 blocks (``limiter`` names
  "registers"). A kernel with 0 registers is not limited by them.
* **shared memory**: ``static + dynamic + reserved`` rounded up to the allocation unit (256 B on
  sm_75, 128 B on sm_8x/9x), where the driver reserves 1 KiB per block on sm_80 and later
  (``reservedSharedMemPerBlock``); limit = ``smem_per_sm // allocated``. A block with no shared
  memory at all (possible only on sm_75, which reserves nothing) is not limited by it.

The shared memory per SM is the architecture's *largest* carveout (164 KiB on sm_80, 228 KiB on
sm_90, 100 KiB on sm_86/89, 64 KiB on sm_75), which is what the header assumes when no carveout
preference is set. The driver may pick a smaller carveout at launch (it favours L1 when the
kernel's shared memory allows it), and ``cudaFuncAttributePreferredSharedMemoryCarveout`` changes
it, so a real launch can have fewer blocks per SM than this reports when shared memory is the
limiter. The per-block limit used to reject input is the opt-in maximum (227 KiB on sm_90, ...):
kernels above 48 KiB must opt in with ``cudaFuncSetAttribute`` before launching.

``limiter`` names the tightest limit; when several tie, the first in the header's order of
``cudaOccLimitingFactor`` wins: warps, registers, shared_memory, blocks (``limiters`` lists all
of them). Not modelled: partitioned global caching (sm_5x/6x only), the Hopper barrier and
cluster limits, and per-function ``maxThreadsPerBlock`` from ``__launch_bounds__``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from .gpus import Arch, get_arch

# The header reports a resource a kernel does not use as INT_MAX.
UNLIMITED = 2**31 - 1

# Tie order of cudaOccLimitingFactor (OCC_LIMIT_WARPS, _REGISTERS, _SHARED_MEMORY, _BLOCKS).
LIMITER_ORDER = ("warps", "registers", "shared_memory", "blocks")


def _round_up(x: int, unit: int) -> int:
    return -(-x // unit) * unit


@dataclass(frozen=True)
class Waves:
    """How a grid fills the GPU: ``waves`` = grid / (blocks_per_sm * SMs), ``rounded`` = ceil of
    it, ``efficiency`` = waves / rounded (1.0 when the last wave is full)."""

    waves: float
    rounded: int
    efficiency: float


@dataclass(frozen=True)
class Occupancy:
    """Result of :func:`occupancy` (per SM)."""

    arch: str
    threads_per_block: int
    registers_per_thread: int
    smem_per_block: int             # static + dynamic, as asked
    warps_per_block: int
    registers_per_block: int        # allocated (per-warp rounding included)
    smem_allocated_per_block: int   # with the reservation and the rounding
    limit_warps: int
    limit_blocks: int
    limit_registers: int
    limit_shared_memory: int
    active_blocks_per_sm: int
    active_warps_per_sm: int
    occupancy: float                # active warps / max warps per SM
    limiter: str
    limiters: tuple

    def waves(self, grid_blocks: int, sm_count: int) -> Waves:
        """Waves of ``grid_blocks`` over ``sm_count`` SMs at this occupancy."""
        _check_int("grid_blocks", grid_blocks, 1)
        _check_int("sm_count", sm_count, 1)
        if self.active_blocks_per_sm == 0:
            raise ValueError(f"this launch cannot run: 0 blocks fit per SM (limited by {self.limiter})")
        w = grid_blocks / (self.active_blocks_per_sm * sm_count)
        rounded = math.ceil(w)
        return Waves(waves=w, rounded=rounded, efficiency=w / rounded)


def _check_int(name: str, value, low: int, high: int | None = None) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{name} must be an int, got {value!r}")
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise ValueError(f"{name} must be {bound}, got {value}")


def _register_limit(a: Arch, regs_per_thread: int, warps_per_block: int) -> tuple[int, int]:
    """(blocks per SM allowed by registers, registers allocated per block)."""
    per_warp = _round_up(regs_per_thread * a.warp_size, a.reg_alloc_unit)
    per_block = per_warp * warps_per_block
    if per_warp == 0:
        return UNLIMITED, 0
    # The hardware check assumes the block's warps are spread over all 4 sub-partitions at once.
    if per_warp * _round_up(warps_per_block, a.sub_partitions) > a.regs_per_block:
        return 0, per_block
    warps_per_partition = (a.regs_per_sm // a.sub_partitions) // per_warp
    return (warps_per_partition * a.sub_partitions) // warps_per_block, per_block


def occupancy(arch, threads_per_block: int, registers_per_thread: int,
              static_smem: int = 0, dynamic_smem: int = 0) -> Occupancy:
    """Blocks and warps resident per SM for one launch configuration.

    ``arch``: "sm_75".."sm_90" (or "8.0", (8, 0), an Arch, a GPU from gpus.py).
    ``registers_per_thread``: as ptxas reports it (0..255). ``static_smem`` / ``dynamic_smem``:
    bytes per block. Raises ValueError naming the argument for a block over 1024 threads, over
    255 registers, or with more shared memory than the architecture's opt-in per-block maximum.
    """
    a = get_arch(arch)
    _check_int("threads_per_block", threads_per_block, 1, a.max_threads_per_block)
    _check_int("registers_per_thread", registers_per_thread, 0, a.max_regs_per_thread)
    _check_int("static_smem", static_smem, 0)
    _check_int("dynamic_smem", dynamic_smem, 0)
    smem = static_smem + dynamic_smem
    if smem > a.smem_per_block_optin:
        raise ValueError(f"static_smem + dynamic_smem = {smem} B is over the {a.name} per-block "
                         f"maximum of {a.smem_per_block_optin} B (opt-in)")

    warps_per_block = -(-threads_per_block // a.warp_size)
    limit_warps = a.max_warps_per_sm // warps_per_block
    limit_blocks = a.max_blocks_per_sm
    limit_regs, regs_alloc = _register_limit(a, registers_per_thread, warps_per_block)
    smem_alloc = _round_up(smem + a.reserved_smem_per_block, a.smem_granularity)
    limit_smem = a.smem_per_sm // smem_alloc if smem_alloc else UNLIMITED

    limits = {"warps": limit_warps, "registers": limit_regs,
              "shared_memory": limit_smem, "blocks": limit_blocks}
    blocks = min(limits.values())
    tied = tuple(name for name in LIMITER_ORDER if limits[name] == blocks)
    warps = blocks * warps_per_block
    return Occupancy(
        arch=a.name, threads_per_block=threads_per_block, registers_per_thread=registers_per_thread,
        smem_per_block=smem, warps_per_block=warps_per_block, registers_per_block=regs_alloc,
        smem_allocated_per_block=smem_alloc, limit_warps=limit_warps, limit_blocks=limit_blocks,
        limit_registers=limit_regs, limit_shared_memory=limit_smem, active_blocks_per_sm=blocks,
        active_warps_per_sm=warps, occupancy=warps / a.max_warps_per_sm, limiter=tied[0],
        limiters=tied)
