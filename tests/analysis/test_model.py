"""The performance model and the GPU table, against hand-computed times (arithmetic in the
comments; peaks and bandwidths are the datasheet figures written out as literals)."""
from __future__ import annotations

import math

import pytest

from pygpu_ops.analysis.gpus import ARCHES, GPUS, get_arch, get_gpu
from pygpu_ops.analysis.model import EXPECTED_ERROR, Launch, model

GIB = 1 << 30
MIB = 1 << 20
H200_BW = 4.8e12          # B/s, H200 datasheet
H200_FP32 = 67e12         # FLOP/s, H200 datasheet
H200_SMS = 132
H200_HZ = 1.98e9


def streaming(regs=16, read_bytes=GIB, write_bytes=GIB, sectors=None, **kw):
    """A copy-like kernel: 256-thread blocks, 16 B per thread, one sector per 32 B moved."""
    total = read_bytes + write_bytes
    blocks = read_bytes // (256 * 16)
    loads = read_bytes // 32 if sectors is None else sectors
    return Launch(grid_blocks=blocks, threads_per_block=256, registers_per_thread=regs,
                  load_sectors=loads, store_sectors=write_bytes // 32,
                  load_requests=blocks * 8, store_requests=blocks * 8,
                  bytes_min=total, working_set_bytes=total, **kw)


def test_streaming_is_dram_bound_at_spec_bandwidth():
    # 1 GiB read + 1 GiB written on H200: 2^31 B / 4.8e12 B/s = 447.39 us. 256 thr x 16 regs: 8
    # blocks/SM = 64 warps, so no latency penalty; flops 0.
    m = model(streaming(), "H200")
    assert m.bound == "dram"
    assert m.dram_rule == "sectors"
    assert m.dram_bytes == 2 * GIB
    assert m.modeled_us == pytest.approx(2 * GIB / H200_BW * 1e6)
    assert m.modeled_us == pytest.approx(447.392, rel=1e-5)
    assert m.math_us == 0 and m.shared_us == 0 and m.issue_us is None
    assert m.headroom == pytest.approx(1.0)
    # Same kernel on H100 (3.35 TB/s): 2^31 / 3.35e12 = 641.04 us.
    assert model(streaming(), "h100 sxm").modeled_us == pytest.approx(2 * GIB / 3.35e12 * 1e6)


def test_uncoalesced_loads_cost_their_sectors():
    # Loads touching 8x the sectors they need (32 B used per 256 B fetched): DRAM bytes =
    # 8 GiB loads + 1 GiB stores = 9 GiB; headroom = 9 GiB / 2 GiB = 4.5.
    m = model(streaming(sectors=8 * GIB // 32), "H200")
    assert m.dram_bytes == 9 * GIB
    assert m.modeled_us == pytest.approx(9 * GIB / H200_BW * 1e6)
    assert m.headroom == pytest.approx(4.5)


def sgemm(n=8192, sectors=1000, regs=128, grid=None):
    """A 128x128-tile SGEMM: 256 threads, 16 KiB static shared memory, 2 n^3 FLOPs."""
    tiles = (n // 128) ** 2 if grid is None else grid
    return Launch(grid_blocks=tiles, threads_per_block=256, registers_per_thread=regs,
                  static_smem=16 * 1024, flops=2 * n**3, load_sectors=sectors,
                  bytes_min=3 * n * n * 4, working_set_bytes=3 * n * n * 4)


def test_big_sgemm_is_fp32_bound_with_wave_quantization():
    # 8192^3 SGEMM on H200: 2 x 8192^3 = 1.0995e12 FLOP / 67e12 = 16410.6 us at peak. 256 thr x 128
    # regs on sm_90 -> 2 blocks/SM (16 warps: no latency penalty). 64 x 64 = 4096 tiles over
    # 2 x 132 = 264 slots = 15.515 waves -> 16 rounds: x 16 / 15.515 = 1.03125 -> 16923.5 us.
    # DRAM: working set 805 MB > 50 MiB L2, sectors tiny -> bytes_min 805.3 MB / 4.8e12 = 167.8 us.
    m = model(sgemm(), "H200")
    flops = 2 * 8192**3
    waves = 4096 / (2 * H200_SMS)
    assert m.bound == "fp32"
    assert m.occupancy.active_blocks_per_sm == 2
    assert m.wave_factor == pytest.approx(16 / waves)
    assert m.modeled_us == pytest.approx(flops / H200_FP32 * 16 / waves * 1e6)
    assert m.modeled_us == pytest.approx(16923.45, rel=1e-5)
    assert m.dram_us == pytest.approx(3 * 8192**2 * 4 / H200_BW * 1e6)
    assert m.terms_us == {"dram": m.dram_us, "fp32": m.math_us, "shared": 0.0}
    # Roofline: max(167.8, 16410.6) us -> headroom = the wave factor.
    assert m.roofline_us == pytest.approx(flops / H200_FP32 * 1e6)
    assert m.headroom == pytest.approx(16 / waves)


def test_one_block_more_than_the_sms_doubles_compute_time():
    # 1024 thr x 64 regs on sm_90: 2048 regs/warp -> 8 per sub-partition -> 32 warps = 1 block/SM
    # (32 warps: no latency penalty). Same work per block: a grid of 132 blocks is 1 wave; 133
    # blocks is 1.0076 waves run in 2 rounds, so 133 x F / peak x 2 / (133/132) = 2 x (132 F / peak).
    per_block = 1e9

    def launch(grid):
        return Launch(grid_blocks=grid, threads_per_block=1024, registers_per_thread=64,
                      flops=per_block * grid)

    one = model(launch(H200_SMS), "H200")
    over = model(launch(H200_SMS + 1), "H200")
    assert one.occupancy.active_blocks_per_sm == 1
    assert one.wave_factor == 1.0
    assert one.modeled_us == pytest.approx(H200_SMS * per_block / H200_FP32 * 1e6)
    assert over.modeled_us == pytest.approx(2 * one.modeled_us)
    assert over.waves.rounded == 2


def test_working_set_in_l2_uses_bytes_min():
    # 16 MiB touched (fits H200's 50 MiB L2), but 10x that in sectors: DRAM bytes = bytes_min =
    # 16 MiB -> 16 MiB / 4.8e12 = 3.495 us. The same counts with a 64 MiB working set pay for the
    # sectors: 160 MiB / 4.8e12 = 34.95 us.
    def launch(working_set):
        return Launch(grid_blocks=4096, threads_per_block=256, registers_per_thread=32,
                      load_sectors=10 * 16 * MIB // 32, bytes_min=16 * MIB,
                      working_set_bytes=working_set)

    fits = model(launch(16 * MIB), "H200")
    spills = model(launch(64 * MIB), "H200")
    assert (fits.dram_rule, fits.dram_bytes) == ("bytes_min", 16 * MIB)
    assert fits.modeled_us == pytest.approx(16 * MIB / H200_BW * 1e6)
    assert (spills.dram_rule, spills.dram_bytes) == ("sectors", 160 * MIB)
    assert spills.modeled_us == pytest.approx(160 * MIB / H200_BW * 1e6)
    # T4's L2 is 4 MiB: there the 16 MiB working set spills (160 MiB / 320e9 B/s = 524.3 us).
    t4 = model(launch(16 * MIB), "T4")
    assert t4.dram_rule == "sectors"
    assert t4.modeled_us == pytest.approx(160 * MIB / 320e9 * 1e6)


def test_low_occupancy_is_charged():
    # 256 thr x 255 regs on sm_90: 8160 -> 8192 regs/warp -> 2 per sub-partition -> 8 warps = 1
    # block. 8 < 16 warps: every term / (8/16) -> the streaming time doubles to 894.78 us.
    m = model(streaming(regs=255), "H200")
    assert m.occupancy.active_warps_per_sm == 8
    assert m.latency_factor == 0.5
    assert m.modeled_us == pytest.approx(2 * 2 * GIB / H200_BW * 1e6)


def test_shared_and_issue_terms():
    # 1e9 wavefronts on H200: one per clock per SM -> 1e9 / (132 x 1.98e9) s = 3826.1 us.
    # 2e9 warp instructions at 4 per clock per SM -> 2e9 / (4 x 132 x 1.98e9) s = 1913.0 us.
    # Grid 132 x 8 = 1056 blocks of 256 thr x 32 regs: 8 blocks/SM, exactly 1 wave.
    launch = Launch(grid_blocks=1056, threads_per_block=256, registers_per_thread=32,
                    shared_wavefronts=10**9, instructions=2 * 10**9)
    m = model(launch, "H200")
    assert m.bound == "shared"
    assert m.shared_us == pytest.approx(1e9 / (H200_SMS * H200_HZ) * 1e6)
    assert m.issue_us == pytest.approx(2e9 / (4 * H200_SMS * H200_HZ) * 1e6)
    assert m.headroom == math.inf  # no flops, no compulsory bytes: a zero roofline
    m2 = model(Launch(grid_blocks=1056, threads_per_block=256, registers_per_thread=32,
                      instructions=10**10), "H200")
    assert m2.bound == "issue"


@pytest.mark.parametrize("kind,bound,peak", [
    ("fp64", "fp64", 34e12),                              # H200 datasheet
    ("int8-tensor", "int8", 1979e12),                     # 3958 sparse / 2
    ("int8-dp4a", "int8", 132 * 64 * 8 * 1.98e9),         # assumed IMAD rate: 133.8 TOPS
])
def test_math_kinds(kind, bound, peak):
    launch = Launch(grid_blocks=1056, threads_per_block=256, registers_per_thread=32,
                    flops=1e13, flop_kind=kind)
    m = model(launch, "H200")
    assert m.bound == bound
    assert m.modeled_us == pytest.approx(1e13 / peak * 1e6)


def test_monotonic_in_each_count():
    # Registers are left out on purpose: fewer blocks per SM can fill the last wave better (A100,
    # 4096 blocks of 256 threads: 64 regs -> 4 blocks/SM, 9.48 waves; 128 regs -> 2 blocks/SM,
    # 18.96 waves), so the modeled time is not monotonic in occupancy, as on hardware.
    base = dict(grid_blocks=4096, threads_per_block=256, registers_per_thread=64,
                flops=2e11, bytes_min=64 * MIB, working_set_bytes=256 * MIB, shared_wavefronts=10**7)
    grow = {"load_sectors": [0, 10**6, 10**7, 10**8, 10**9],
            "flops": [0, 1e11, 1e12, 1e13],
            "shared_wavefronts": [0, 10**6, 10**8, 10**10],
            "working_set_bytes": [0, 32 * MIB, 64 * MIB, 1 * GIB]}
    for gpu in ("H200", "A100", "T4"):
        for name, values in grow.items():
            times = [model(Launch(**{**base, "load_sectors": 4 * 10**6, name: v}), gpu).modeled_us
                     for v in values]
            assert times == sorted(times), (gpu, name, times)
        assert model(Launch(**base), gpu).modeled_us > 0


def test_labelled_modeled():
    m = model(streaming(), "H200")
    text = str(m)
    assert text.startswith("modeled ") and "not measured" in text and "dram-bound" in text
    assert "10-30%" in EXPECTED_ERROR and "Hong & Kim" in EXPECTED_ERROR
    assert m.expected_error == EXPECTED_ERROR


@pytest.mark.parametrize("kwargs,name", [
    (dict(grid_blocks=0), "grid_blocks"),
    (dict(load_sectors=-1), "load_sectors"),
    (dict(flops=float("nan")), "flops"),
    (dict(flops=-2.0), "flops"),
    (dict(flop_kind="fp16"), "flop_kind"),
    (dict(instructions=1.5), "instructions"),
    (dict(bytes_min=None), "bytes_min"),
])
def test_bad_launch_names_the_argument(kwargs, name):
    args = dict(grid_blocks=1, threads_per_block=32, registers_per_thread=8)
    with pytest.raises(ValueError, match=name):
        Launch(**{**args, **kwargs})


def test_bad_launch_for_the_gpu_names_the_argument():
    # 100 KiB fits sm_80 (163 KiB) but not sm_89 (99 KiB).
    launch = Launch(grid_blocks=1, threads_per_block=32, registers_per_thread=8, dynamic_smem=100 * 1024)
    assert model(launch, "A100").occupancy.active_blocks_per_sm == 1
    with pytest.raises(ValueError, match="dynamic_smem"):
        model(launch, "L4")
    with pytest.raises(TypeError, match="Launch"):
        model({"grid_blocks": 1}, "H200")


def test_gpu_lookup():
    assert get_gpu("h200") is GPUS["H200"]
    assert get_gpu("  RTX   4090 ") is get_gpu("rtx4090") is GPUS["RTX 4090"]
    assert get_gpu("A100 SXM 80GB") is GPUS["A100"]
    with pytest.raises(ValueError) as err:
        get_gpu("V100")
    for known in ("H200", "H100", "A100", "L4", "RTX 4090", "T4"):
        assert known in str(err.value)
    assert get_arch("9.0") is ARCHES["sm_90"]
    assert [GPUS[n].arch.name for n in ("H200", "H100", "A100", "L4", "RTX 4090", "T4")] == \
        ["sm_90", "sm_90", "sm_80", "sm_89", "sm_89", "sm_75"]


@pytest.mark.parametrize("name", list(GPUS))
def test_datasheet_peaks_match_the_programming_guide_rates(name):
    # A datasheet peak and SMs x lanes per clock (Programming Guide) x 2 x boost clock are two
    # independent sources; they agree within 2% for FP32 and FP64 on every part.
    g = GPUS[name]
    fp32 = g.sm_count * g.arch.fp32_per_clk * 2 * g.boost_clock_ghz / 1e3
    fp64 = g.sm_count * g.arch.fp64_per_clk * 2 * g.boost_clock_ghz / 1e3
    assert g.fp32_tflops == pytest.approx(fp32, rel=0.02)
    assert g.fp64_tflops == pytest.approx(fp64, rel=0.02)
    assert g.source and g.arch.source and "assumed" in g.int8_dp4a_source
    assert g.arch.smem_per_block_optin + g.arch.reserved_smem_per_block <= g.arch.smem_per_sm
