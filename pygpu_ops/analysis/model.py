"""A bound-and-bottleneck performance model: a *modeled* kernel time from counts, no GPU needed.

The model (every number it returns is modeled, never measured)
--------------------------------------------------------------
A launch (:class:`Launch`: grid, block, registers, shared memory, flops of one kind, global
sectors and requests, shared-memory wavefronts, compulsory bytes, working set, optionally a warp
instruction count) on a GPU from :mod:`.gpus` takes the longest of these times, each a resource's
work divided by its peak rate (the roofline idea of Williams, Waterman & Patterson, "Roofline: an
insightful visual performance model for multicore architectures", CACM 52(4):65-76, 2009,
doi:10.1145/1498765.1498785, extended to more than two resources):

* ``dram``: DRAM bytes / DRAM bandwidth. DRAM bytes are ``sectors x 32 B`` when the working set
  (at least ``bytes_min``) is larger than the L2, else ``bytes_min``: a working set that fits in L2
  is read from DRAM once and every later touch hits L2; one that does not is charged every sector
  the SMs request. The first case never goes below ``bytes_min``. This is pessimistic for tiled
  kernels whose tiles do hit in L2 though the whole problem does not fit; it is meant for
  streaming kernels and for spotting uncoalesced access (sectors per request above 4 for 32-bit).
* math: flops / the peak of their kind (``fp32``, ``fp64``: CUDA cores; ``int8-dp4a``: an assumed
  rate, see gpus.py; ``int8-tensor``: dense tensor-core peak). The bound is named "fp32", "fp64"
  or "int8".
* ``shared``: shared-memory wavefronts / (SMs x 1 wavefront per clock): 32 banks x 4 B serve one
  128-byte wavefront per clock per SM.
* ``issue`` (only when ``instructions`` is given): warp instructions / (SMs x 4 per clock), one
  per scheduler per clock.

Two corrections, both simple on purpose:

* Latency hiding: with fewer than ``LATENCY_WARPS`` = 16 resident warps per SM (4 per scheduler)
  every term is divided by ``active_warps / 16``. Four warps per scheduler is what a dependent
  FP32 chain of ~4-cycle latency needs to issue every clock without instruction-level parallelism
  (latency x throughput = parallelism needed; Volkov, "Better Performance at Lower Occupancy",
  GTC 2010), and 16 warps of 16-byte loads (8 KiB in flight per SM) are in the range Little's law
  asks of HBM (H100: 3.35 TB/s / 132 SMs / 1.98 GHz = 12.8 B/clk x several hundred cycles). Above
  16 warps the model assumes latency is hidden; kernels with much ILP hide it with fewer warps,
  so this over-charges them, and kernels with long dependent chains need more.
* Wave quantization: a grid of ``waves`` = grid / (blocks per SM x SMs) runs in ``ceil(waves)``
  rounds; the per-SM terms (math, shared, issue) are multiplied by ``ceil(waves) / waves``. DRAM
  is a shared resource and is not scaled. A grid smaller than one wave is charged as if its blocks
  only had their share of their SMs (a lone block may in fact use its whole SM). Because of this
  term the modeled time is not monotonic in occupancy: fewer blocks per SM can fill the last wave
  better, as on hardware.

``modeled_us`` is the largest term (terms are assumed to overlap perfectly); ``bound`` names it
(ties: dram, then math, shared, issue). ``headroom`` = modeled time / roofline time, where the
roofline time is max(bytes_min / bandwidth, flops / peak): 1.0 means the kernel would run at its
roofline; above 1 says how far the counts keep it from it (infinite when the launch has
neither flops nor ``bytes_min`` but some other work, 1.0 when it has no work at all). Not
modelled: launch overhead (a few microseconds), L2 bandwidth, the L1/texture pipeline, tail
effects inside a block, clock throttling, and DRAM efficiency below the spec sheet (HBM copies
reach about 90% of it).

:data:`EXPECTED_ERROR` states how far such a model is expected to be from a measurement.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Optional

from .gpus import GPU, get_gpu
from .occupancy import Occupancy, Waves, occupancy

SECTOR_BYTES = 32
WAVEFRONT_BYTES = 128  # one shared-memory wavefront: 32 banks x 4 B
LATENCY_WARPS = 16
FLOP_KINDS = {"fp32": "fp32", "fp64": "fp64", "int8-dp4a": "int8", "int8-tensor": "int8"}
BOUND_ORDER = ("dram", "math", "shared", "issue")

EXPECTED_ERROR = (
    "Modeled, not measured. A bound model like this one is expected to land within about 10-30% "
    "of measured time for regular GEMM and streaming kernels, and further off for latency-bound "
    "kernels or ones whose speed depends on L2 hit rates (an expectation, not a cited result). "
    "For scale: Hong & Kim's analytical GPU model, which models memory- and thread-level "
    "parallelism explicitly (ISCA 2009, 'An analytical model for a GPU architecture with "
    "memory-level and thread-level parallelism awareness'), reports a geometric-mean absolute "
    "error of 5.4% on micro-benchmarks and 13.3% on GPU applications; the roofline model "
    "(Williams, Waterman & Patterson, CACM 2009) is an upper bound on attainable performance and "
    "claims no accuracy. Example: for an 8192^3 SGEMM on H200 this model gives about 65 TFLOP/s, "
    "while the best published cuBLAS FP32 figure is about 51 TFLOP/s: the measured time is 27% "
    "longer than the modeled one."
)


def _check_count(name: str, value, allow_float: bool = False) -> None:
    kinds = (int, float) if allow_float else (int,)
    if isinstance(value, bool) or not isinstance(value, kinds):
        raise ValueError(f"{name} must be {'a number' if allow_float else 'an int'}, got {value!r}")
    if not value >= 0 or (allow_float and math.isinf(value)):
        raise ValueError(f"{name} must be finite and >= 0, got {value!r}")


@dataclass(frozen=True)
class Launch:
    """What the model needs to know about one kernel launch (counts are for the whole grid)."""

    grid_blocks: int
    threads_per_block: int
    registers_per_thread: int
    static_smem: int = 0
    dynamic_smem: int = 0
    flops: float = 0               # operations of flop_kind (an FMA is 2)
    flop_kind: str = "fp32"        # fp32 | fp64 | int8-dp4a | int8-tensor
    load_sectors: int = 0          # 32-byte global sectors requested by loads
    store_sectors: int = 0
    load_requests: int = 0         # warp-level global load instructions
    store_requests: int = 0
    shared_wavefronts: int = 0
    bytes_min: int = 0             # compulsory DRAM traffic (each byte read or written once)
    working_set_bytes: int = 0     # distinct bytes touched (taken as at least bytes_min)
    instructions: Optional[int] = None  # warp instructions issued, if known

    def __post_init__(self):
        _check_count("grid_blocks", self.grid_blocks)
        if self.grid_blocks < 1:
            raise ValueError(f"grid_blocks must be >= 1, got {self.grid_blocks}")
        for name in ("load_sectors", "store_sectors", "load_requests", "store_requests",
                     "shared_wavefronts", "bytes_min", "working_set_bytes"):
            _check_count(name, getattr(self, name))
        _check_count("flops", self.flops, allow_float=True)
        if self.instructions is not None:
            _check_count("instructions", self.instructions)
        if self.flop_kind not in FLOP_KINDS:
            raise ValueError(f"flop_kind must be one of {sorted(FLOP_KINDS)}, got {self.flop_kind!r}")
        # threads, registers and shared memory are checked by occupancy() against the GPU's arch.

    @property
    def sectors(self) -> int:
        return self.load_sectors + self.store_sectors

    @property
    def sectors_per_request(self) -> float:
        """Coalescing: 4 for coalesced 32-bit access, 32 for one lane per 128-byte line."""
        requests = self.load_requests + self.store_requests
        return self.sectors / requests if requests else 0.0


@dataclass(frozen=True)
class Modeled:
    """The model's answer for one launch on one GPU; every time here is modeled."""

    gpu: str
    modeled_us: float
    bound: str                     # dram | fp32 | fp64 | int8 | shared | issue
    dram_us: float
    math_us: float
    math_kind: str                 # fp32 | fp64 | int8: the name math_us goes by in ``bound``
    shared_us: float
    issue_us: Optional[float]      # None when the launch gave no instruction count
    dram_bytes: int
    dram_rule: str                 # "sectors" (working set > L2) or "bytes_min"
    roofline_us: float
    headroom: float
    latency_factor: float          # <= 1; every term was divided by it
    wave_factor: float             # ceil(waves) / waves, applied to math, shared, issue
    occupancy: Occupancy = field(repr=False)
    waves: Waves = field(repr=False)
    expected_error: str = field(default=EXPECTED_ERROR, repr=False)

    @property
    def terms_us(self) -> dict:
        """Each bound's modeled time in microseconds, keyed by the names ``bound`` uses."""
        terms = {"dram": self.dram_us, self.math_kind: self.math_us, "shared": self.shared_us}
        if self.issue_us is not None:
            terms["issue"] = self.issue_us
        return terms

    def __str__(self) -> str:
        terms = ", ".join(f"{k} {v:.3g} us" for k, v in self.terms_us.items())
        return (f"modeled {self.modeled_us:.4g} us on {self.gpu} ({self.bound}-bound; modeled terms: "
                f"{terms}; {self.headroom:.3g}x the roofline time; occupancy "
                f"{self.occupancy.occupancy:.0%}, {self.waves.waves:.3g} waves) - modeled, not measured")


def model(launch: Launch, gpu) -> Modeled:
    """The modeled time of ``launch`` on ``gpu`` (a name for :func:`get_gpu` or a GPU)."""
    if not isinstance(launch, Launch):
        raise TypeError(f"launch must be a Launch, got {type(launch).__name__}")
    g: GPU = get_gpu(gpu)
    occ = occupancy(g.arch, launch.threads_per_block, launch.registers_per_thread,
                    launch.static_smem, launch.dynamic_smem)
    waves = occ.waves(launch.grid_blocks, g.sm_count)
    latency = min(1.0, occ.active_warps_per_sm / LATENCY_WARPS)
    wave = 1.0 / waves.efficiency

    working_set = max(launch.working_set_bytes, launch.bytes_min)
    if working_set > g.l2_bytes:
        dram_bytes, rule = max(launch.sectors * SECTOR_BYTES, launch.bytes_min), "sectors"
    else:
        dram_bytes, rule = launch.bytes_min, "bytes_min"
    bandwidth = g.dram_gbps * 1e9
    peak = g.peak_ops_per_s(launch.flop_kind)
    sm_clocks = g.sm_count * g.clock_hz

    us = 1e6
    dram = dram_bytes / bandwidth * us / latency
    math_t = launch.flops / peak * us * wave / latency
    wavefronts_per_s = sm_clocks * g.arch.shared_bytes_per_clk / WAVEFRONT_BYTES
    shared = launch.shared_wavefronts / wavefronts_per_s * us * wave / latency
    issue = (None if launch.instructions is None
             else launch.instructions / (sm_clocks * g.arch.issue_per_clk) * us * wave / latency)

    kind_name = FLOP_KINDS[launch.flop_kind]
    candidates = {"dram": dram, "math": math_t, "shared": shared}
    if issue is not None:
        candidates["issue"] = issue
    top = max(candidates.values())
    winner = next(name for name in BOUND_ORDER if name in candidates and candidates[name] == top)
    bound = kind_name if winner == "math" else winner

    roofline = max(launch.bytes_min / bandwidth, launch.flops / peak) * us
    headroom = top / roofline if roofline > 0 else (1.0 if top == 0 else math.inf)
    return Modeled(gpu=g.name, modeled_us=top, bound=bound, dram_us=dram, math_us=math_t,
                   math_kind=kind_name, shared_us=shared, issue_us=issue, dram_bytes=dram_bytes,
                   dram_rule=rule, roofline_us=roofline, headroom=headroom,
                   latency_factor=latency, wave_factor=wave, occupancy=occ, waves=waves)
