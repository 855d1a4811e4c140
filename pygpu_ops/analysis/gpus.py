"""Spec table of the GPUs the modeled analysis knows: per-architecture limits and per-part peaks.

Two tables, because two kinds of fact live here:

* ``ARCHES``: what follows from the compute capability alone (resident warps and blocks per SM,
  register file, shared memory per SM and per block, allocation granularities, per-clock
  throughput of the CUDA cores). Every part with the same ``sm_XX`` shares them.
* ``GPUS``: what a product adds (SM count, the boost clock its peaks are quoted at, DRAM
  bandwidth, L2 size, the datasheet peaks).

Every figure names its source (the ``source`` field, or a comment at the entry); figures
derived rather than read (e.g. FP64 on parts whose datasheet omits it) say "computed" and show
the product they come from. Shared-memory bandwidth is 32 banks x 4 B = 128 B per clock per SM
on every listed architecture (one wavefront per clock; CUDA C++ Programming Guide, "Shared
Memory" sections of compute capabilities 7.x, 8.x, 9.0).

The INT8 dp4a peak is an *assumption*, labelled as such: NVIDIA publishes no IDP4A rate for
sm_75..sm_90. It is taken as the Programming Guide's 32-bit integer multiply-add rate
(64 lanes per clock per SM), each lane doing 4 multiplies and 4 adds (8 ops), the way the
Pascal P40's 47 TOPS were counted (3840 lanes x 8 x 1.531 GHz).

Lookup: :func:`get_gpu` (case-insensitive, a few aliases) and :func:`get_arch`.
"""
from __future__ import annotations

from dataclasses import dataclass

KIB = 1024
MIB = 1024 * 1024

# Where the figures come from (cited once, referred to by name below).
PROG_GUIDE_CC = ("CUDA C++ Programming Guide, 'Features and Technical Specifications' table "
                 "(docs.nvidia.com/cuda/cuda-c-programming-guide, 'Technical Specifications per "
                 "Compute Capability')")
PROG_GUIDE_THROUGHPUT = ("CUDA C++ Programming Guide, 'Arithmetic Instructions' table (results per "
                         "clock cycle per multiprocessor)")
OCC_HEADER = ("CUDA toolkit cuda_occupancy.h (CUDA 13.0, __CUDA_OCC_MAJOR__ 12): "
              "cudaOccSMemAllocationGranularity, cudaOccRegAllocationGranularity, "
              "cudaOccSubPartitionsPerMultiprocessor, cudaOccMaxBlocksPerMultiprocessor")
ISSUE_SOURCE = ("Volta/Turing/Ampere/Ada/Hopper architecture whitepapers: 4 SM sub-partitions, each "
                "with one warp scheduler dispatching one warp instruction per clock")
DP4A_ASSUMPTION = ("assumed: IDP4A at the 32-bit integer multiply-add rate of " + PROG_GUIDE_THROUGHPUT
                   + "; NVIDIA publishes no dp4a rate for this architecture")


@dataclass(frozen=True)
class Arch:
    """Limits and per-clock rates of one compute capability (per SM unless named otherwise)."""

    name: str                      # "sm_80"
    major: int
    minor: int
    max_threads_per_sm: int
    max_blocks_per_sm: int
    smem_per_sm: int               # bytes, largest carveout (the driver may choose a smaller one)
    smem_per_block_optin: int      # bytes, cudaFuncAttributeMaxDynamicSharedMemorySize limit
    reserved_smem_per_block: int   # bytes the driver keeps per block (sm_80+: 1 KiB)
    smem_granularity: int          # bytes, shared-memory allocation unit
    fp32_per_clk: int              # FP32 FMA lanes per clock per SM
    fp64_per_clk: int              # FP64 FMA lanes per clock per SM
    int32_mad_per_clk: int         # 32-bit integer multiply-add lanes per clock per SM
    source: str
    regs_per_sm: int = 64 * KIB    # 32-bit registers
    regs_per_block: int = 64 * KIB
    max_regs_per_thread: int = 255  # ptxas never allocates more (cuda_occupancy.h says 256)
    reg_alloc_unit: int = 256      # registers, allocated per warp
    sub_partitions: int = 4        # register file / scheduler partitions per SM
    warp_size: int = 32
    max_threads_per_block: int = 1024
    issue_per_clk: int = 4         # warp instructions per clock per SM (ISSUE_SOURCE)
    shared_bytes_per_clk: int = 128  # 32 banks x 4 B: one shared-memory wavefront per clock

    @property
    def max_warps_per_sm(self) -> int:
        return self.max_threads_per_sm // self.warp_size


_ARCH_SOURCE = f"{PROG_GUIDE_CC}; {PROG_GUIDE_THROUGHPUT}; {OCC_HEADER}"

ARCHES: dict[str, Arch] = {a.name: a for a in (
    # Turing: 64 KiB shared per SM (carveouts 32/64 KiB), no per-block reservation, 256 B unit.
    Arch("sm_75", 7, 5, max_threads_per_sm=1024, max_blocks_per_sm=16,
         smem_per_sm=64 * KIB, smem_per_block_optin=64 * KIB, reserved_smem_per_block=0,
         smem_granularity=256, fp32_per_clk=64, fp64_per_clk=2, int32_mad_per_clk=64,
         source=_ARCH_SOURCE),
    # A100: carveouts up to 164 KiB, 163 KiB per block opt-in + 1 KiB reserved.
    Arch("sm_80", 8, 0, max_threads_per_sm=2048, max_blocks_per_sm=32,
         smem_per_sm=164 * KIB, smem_per_block_optin=163 * KIB, reserved_smem_per_block=KIB,
         smem_granularity=128, fp32_per_clk=64, fp64_per_clk=32, int32_mad_per_clk=64,
         source=_ARCH_SOURCE),
    # GA10x: 1536 threads, 16 blocks, up to 100 KiB shared (99 KiB per block).
    Arch("sm_86", 8, 6, max_threads_per_sm=1536, max_blocks_per_sm=16,
         smem_per_sm=100 * KIB, smem_per_block_optin=99 * KIB, reserved_smem_per_block=KIB,
         smem_granularity=128, fp32_per_clk=128, fp64_per_clk=2, int32_mad_per_clk=64,
         source=_ARCH_SOURCE),
    # Ada: as sm_86 but 24 resident blocks.
    Arch("sm_89", 8, 9, max_threads_per_sm=1536, max_blocks_per_sm=24,
         smem_per_sm=100 * KIB, smem_per_block_optin=99 * KIB, reserved_smem_per_block=KIB,
         smem_granularity=128, fp32_per_clk=128, fp64_per_clk=2, int32_mad_per_clk=64,
         source=_ARCH_SOURCE),
    # Hopper: carveouts up to 228 KiB, 227 KiB per block opt-in + 1 KiB reserved.
    Arch("sm_90", 9, 0, max_threads_per_sm=2048, max_blocks_per_sm=32,
         smem_per_sm=228 * KIB, smem_per_block_optin=227 * KIB, reserved_smem_per_block=KIB,
         smem_granularity=128, fp32_per_clk=128, fp64_per_clk=64, int32_mad_per_clk=64,
         source=_ARCH_SOURCE),
)}


@dataclass(frozen=True)
class GPU:
    """One product: SM count, the clock its peaks assume, peaks, DRAM and L2.

    Peaks are in TFLOP/s (TOPS for INT8), dense (no 2:4 sparsity), non-tensor for FP32/FP64.
    """

    name: str
    arch: Arch
    sm_count: int
    boost_clock_ghz: float
    fp32_tflops: float
    fp64_tflops: float
    int8_tensor_tops: float
    dram_gbps: float               # GB/s, 1 GB = 1e9 B
    l2_bytes: int
    source: str

    @property
    def int8_dp4a_tops(self) -> float:
        """INT8 dp4a peak (an assumption, see the module docstring): 8 ops per lane per clock."""
        return self.sm_count * self.arch.int32_mad_per_clk * 8 * self.boost_clock_ghz / 1e3

    @property
    def int8_dp4a_source(self) -> str:
        return DP4A_ASSUMPTION

    @property
    def clock_hz(self) -> float:
        return self.boost_clock_ghz * 1e9

    def peak_ops_per_s(self, kind: str) -> float:
        """Peak of one math kind ("fp32", "fp64", "int8-dp4a", "int8-tensor"), in ops per second."""
        tera = {"fp32": self.fp32_tflops, "fp64": self.fp64_tflops,
                "int8-dp4a": self.int8_dp4a_tops, "int8-tensor": self.int8_tensor_tops}
        if kind not in tera:
            raise ValueError(f"kind must be one of {sorted(tera)}, got {kind!r}")
        return tera[kind] * 1e12


def _computed(sms: int, lanes_per_clk: int, ghz: float) -> float:
    """TFLOP/s of FMA lanes (2 flops each) at a clock: for peaks a datasheet leaves out."""
    return sms * lanes_per_clk * 2 * ghz / 1e3


_L4_FP64 = _computed(58, 2, 2.04)       # L4 datasheet lists no FP64: 58 SMs x 2 lanes x 2 x 2.04 GHz
_RTX4090_FP64 = _computed(128, 2, 2.52)  # computed: 128 x 2 x 2 x 2.52 GHz
_T4_FP64 = _computed(40, 2, 1.59)       # T4 datasheet lists no FP64: 40 x 2 x 2 x 1.59 GHz

_SOURCES = {
    "H200": "NVIDIA H200 Tensor Core GPU datasheet (SXM: 141 GB HBM3e, 4.8 TB/s, FP32 67, FP64 34, "
            "INT8 tensor 3,958 TOPS with sparsity -> 1,979 dense); same GH100 die and 132 SMs as H100 "
            "SXM (NVIDIA H100 Tensor Core GPU Architecture whitepaper); 1.98 GHz is the clock that "
            "gives 132 x 128 x 2 x f = 66.9 TFLOP/s (corroborated: "
            "glennklockwood.com/garden/processors/h100)",
    "H100": "NVIDIA H100 Tensor Core GPU datasheet, SXM5 column (FP32 67, FP64 34, INT8 tensor 3,958 "
            "TOPS with sparsity -> 1,979 dense, 3.35 TB/s HBM3); NVIDIA H100 whitepaper (132 SMs, "
            "50 MB L2, 228 KB shared per SM)",
    "A100": "NVIDIA A100 Tensor Core GPU Architecture whitepaper (108 SMs, 1410 MHz boost, 40 MB L2, "
            "FP32 19.5, FP64 9.7, INT8 tensor 624 dense / 1,248 sparse); NVIDIA A100 80GB datasheet, "
            "SXM column (2,039 GB/s HBM2e)",
    "L4": "NVIDIA L4 Tensor Core GPU datasheet (FP32 30.3, INT8 tensor 485 TOPS with sparsity -> "
          "242.5 dense, 300 GB/s GDDR6); AD104 per the NVIDIA Ada GPU Architecture whitepaper (48 MB "
          "L2); 58 SMs x 128 x 2 x 2.04 GHz = 30.3; FP64 computed (2 lanes/clk/SM)",
    "RTX 4090": "NVIDIA Ada GPU Architecture whitepaper, GeForce RTX 4090 column (128 SMs, 2520 MHz "
                "boost, FP32 82.6, INT8 tensor 660.6 dense / 1,321.2 sparse, 72 MB L2, 1,008 GB/s "
                "GDDR6X); FP64 computed (2 lanes/clk/SM)",
    "T4": "NVIDIA T4 Tensor Core GPU datasheet (FP32 8.1, INT8 130 TOPS, 320 GB/s GDDR6); NVIDIA "
          "Turing GPU Architecture whitepaper (TU104, 40 SMs enabled on T4, 1590 MHz boost, 4 MB L2); "
          "FP64 computed (2 lanes/clk/SM)",
}

# Peaks: TFLOP/s (TOPS for INT8 tensor, dense); DRAM GB/s; L2 MiB. Sources in _SOURCES.
#  name        arch     SMs  GHz   FP32  FP64           INT8 TC  DRAM    L2
_ROWS = (
    ("H200",     "sm_90", 132, 1.98, 67.0, 34.0,          1979.0, 4800.0, 50),
    ("H100",     "sm_90", 132, 1.98, 67.0, 34.0,          1979.0, 3350.0, 50),
    ("A100",     "sm_80", 108, 1.41, 19.5, 9.7,           624.0,  2039.0, 40),
    ("L4",       "sm_89", 58,  2.04, 30.3, _L4_FP64,      242.5,  300.0,  48),
    ("RTX 4090", "sm_89", 128, 2.52, 82.6, _RTX4090_FP64, 660.6,  1008.0, 72),
    ("T4",       "sm_75", 40,  1.59, 8.1,  _T4_FP64,      130.0,  320.0,  4),
)

GPUS: dict[str, GPU] = {
    name: GPU(name, ARCHES[arch], sm_count=sms, boost_clock_ghz=ghz, fp32_tflops=fp32,
              fp64_tflops=fp64, int8_tensor_tops=int8, dram_gbps=dram, l2_bytes=l2 * MIB,
              source=_SOURCES[name])
    for name, arch, sms, ghz, fp32, fp64, int8, dram, l2 in _ROWS
}

_ALIASES = {
    "h200 sxm": "H200", "h100 sxm": "H100", "h100 sxm5": "H100", "a100 sxm": "A100",
    "a100 sxm 80gb": "A100", "a100-80gb": "A100", "rtx4090": "RTX 4090", "4090": "RTX 4090",
    "tesla t4": "T4",
}


def get_gpu(name: str) -> GPU:
    """The GPU called ``name`` (case-insensitive; "H100 SXM", "RTX4090" and similar work)."""
    if isinstance(name, GPU):
        return name
    if not isinstance(name, str):
        raise TypeError(f"name must be a GPU name (str), got {type(name).__name__}")
    key = " ".join(name.strip().lower().split())
    by_lower = {n.lower(): n for n in GPUS}
    found = by_lower.get(key) or _ALIASES.get(key)
    if found is None:
        raise ValueError(f"name: unknown GPU {name!r}; known: {', '.join(GPUS)}")
    return GPUS[found]


def get_arch(arch) -> Arch:
    """The :class:`Arch` for "sm_80" / "80" / "8.0" / (8, 0), or of a :class:`GPU`."""
    if isinstance(arch, Arch):
        return arch
    if isinstance(arch, GPU):
        return arch.arch
    if isinstance(arch, tuple) and len(arch) == 2:
        key = f"sm_{arch[0]}{arch[1]}"
    elif isinstance(arch, str):
        s = arch.strip().lower().replace("compute_", "sm_")
        key = "sm_" + s.replace(".", "") if not s.startswith("sm_") else s
    else:
        raise TypeError(f"arch must be a name like 'sm_80', a (major, minor) tuple, an Arch or a GPU, "
                        f"got {type(arch).__name__}")
    if key not in ARCHES:
        raise ValueError(f"arch: unknown architecture {arch!r}; known: {', '.join(ARCHES)}")
    return ARCHES[key]
