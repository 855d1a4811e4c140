"""Occupancy against cases worked by hand from the cuda_occupancy.h rules (arithmetic in each
case's comment): registers per warp rounded to 256 and split over 4 sub-partitions, shared memory
+ 1 KiB reserved (sm_80+) rounded to 128 B (256 B on sm_75), warps rounded up per block."""
from __future__ import annotations

import pytest

from pygpu_ops.analysis.gpus import get_gpu
from pygpu_ops.analysis.occupancy import UNLIMITED, occupancy

KIB = 1024

# (arch, threads, regs, static, dynamic) -> (blocks/SM, active warps, occupancy, limiter)
CASES = [
    # sm_80, 256 thr x 128 regs: 128*32 = 4096 regs/warp; 16384 per sub-partition / 4096 = 4 warps
    # x 4 = 16 warps/SM; 8 warps per block -> 2 blocks. Warps 64/8 = 8, smem 164K/1K = 164.
    pytest.param("sm_80", 256, 128, 0, 0, 2, 16, 16 / 64, "registers", id="sm80-256x128regs"),
    # sm_80, 48 KiB dynamic: 49152 + 1024 reserved = 50176 (a multiple of 128);
    # 167936 // 50176 = 3 (3 x 50176 = 150528, 4 x = 200704). 128 thr x 32 regs: warps 64/4 = 16,
    # regs 1024/warp -> 16 per sub-partition -> 64/4 = 16. -> 3 blocks of 4 warps.
    pytest.param("sm_80", 128, 32, 0, 48 * KIB, 3, 12, 12 / 64, "shared_memory", id="sm80-48K"),
    # sm_80, 82 KiB: without the reservation 2 x 83968 = 167936 = 164 KiB would fit 2 blocks;
    # with it 83968 + 1024 = 84992 and 167936 // 84992 = 1.
    pytest.param("sm_80", 128, 32, 0, 82 * KIB, 1, 4, 4 / 64, "shared_memory", id="sm80-reserved-1K"),
    # sm_80, 256 thr x 33 regs: 33*32 = 1056 rounds up to 1280 (40 regs/thread); 16384 // 1280 =
    # 12 warps per sub-partition -> 48 warps -> 48/8 = 6 blocks (unrounded 1056 would give 15 ->
    # 60/8 = 7).
    pytest.param("sm_80", 256, 33, 0, 0, 6, 48, 48 / 64, "registers", id="sm80-reg-granularity"),
    # sm_80, 32 thr x 104 regs: 3328 regs/warp; a warp lives in one sub-partition, 16384 // 3328 =
    # 4 per sub-partition -> 16 warps (the whole file, 65536 // 3328, would say 19) -> 16 blocks.
    pytest.param("sm_80", 32, 104, 0, 0, 16, 16, 16 / 64, "registers", id="sm80-sub-partitions"),
    # sm_80, 800 thr (25 warps) x 80 regs: 2560 regs/warp; 16384 // 2560 = 6 per sub-partition ->
    # 24 warps < 25 (and the hardware check 2560 x 28 = 71680 > 65536) -> 0 blocks.
    pytest.param("sm_80", 800, 80, 0, 0, 0, 0, 0.0, "registers", id="sm80-does-not-fit"),
    # sm_80, 65 thr (3 warps) x 16 regs: warps 64 // 3 = 21; regs 512/warp -> 32 per sub-partition
    # -> 128 // 3 = 42; blocks 32. -> 21 blocks, 63 warps.
    pytest.param("sm_80", 65, 16, 0, 0, 21, 63, 63 / 64, "warps", id="sm80-65-threads"),
    # sm_75, 1024 thr x 64 regs: warps 32/32 = 1; regs 2048/warp -> 8 per sub-partition -> 32/32
    # = 1; blocks 16; no shared memory (no reservation on sm_75) -> unlimited. Tie: warps first.
    pytest.param("sm_75", 1024, 64, 0, 0, 1, 32, 1.0, "warps", id="sm75-1024x64"),
    # sm_75, 21845 B static: rounded to 256 B -> 22016; 65536 // 22016 = 2 (unrounded: 3 x 21845
    # = 65535 would fit 3). 32 thr x 16 regs: warps 32, regs 512 -> 32 per sub-partition -> 128.
    pytest.param("sm_75", 32, 16, 21845, 0, 2, 2, 2 / 32, "shared_memory", id="sm75-smem-256B-unit"),
    # sm_86, 33 threads take 2 warps: warps 48 // 2 = 24; blocks 16 -> 16 blocks = 32 warps
    # resident (not 16.5), occupancy 32/48.
    pytest.param("sm_86", 33, 32, 0, 0, 16, 32, 32 / 48, "blocks", id="sm86-33-threads"),
    # sm_86, 256 thr x 64 regs: 2048/warp -> 8 per sub-partition -> 32 warps -> 4 blocks;
    # warps 48/8 = 6.
    pytest.param("sm_86", 256, 64, 0, 0, 4, 32, 32 / 48, "registers", id="sm86-256x64regs"),
    # sm_89, 32 thr x 32 regs: warps 48, regs 64, blocks 24 -> 24 blocks, occupancy 24/48.
    pytest.param("sm_89", 32, 32, 0, 0, 24, 24, 0.5, "blocks", id="sm89-block-cap"),
    # sm_89, 40 KiB static: 40960 + 1024 = 41984; 102400 // 41984 = 2.
    pytest.param("sm_89", 128, 32, 40 * KIB, 0, 2, 8, 8 / 48, "shared_memory", id="sm89-40K"),
    # sm_90, 100 KiB: 102400 + 1024 = 103424; 233472 // 103424 = 2 (3 x = 310272).
    pytest.param("sm_90", 128, 32, 0, 100 * KIB, 2, 8, 8 / 64, "shared_memory", id="sm90-100K"),
    # sm_90, 384 thr x 168 regs: 168*32 = 5376 = 21 x 256; 16384 // 5376 = 3 per sub-partition ->
    # 12 warps = one 12-warp block.
    pytest.param("sm_90", 384, 168, 0, 0, 1, 12, 12 / 64, "registers", id="sm90-384x168regs"),
    # sm_90, 1024 thr x 32 regs: warps 64/32 = 2; regs 1024/warp -> 16 -> 64/32 = 2; tie, warps
    # first in the header's order.
    pytest.param("sm_90", 1024, 32, 0, 0, 2, 64, 1.0, "warps", id="sm90-full"),
]


@pytest.mark.parametrize("arch,threads,regs,static,dynamic,blocks,warps,occ,limiter", CASES)
def test_hand_computed(arch, threads, regs, static, dynamic, blocks, warps, occ, limiter):
    r = occupancy(arch, threads, regs, static_smem=static, dynamic_smem=dynamic)
    assert (r.active_blocks_per_sm, r.active_warps_per_sm, r.limiter) == (blocks, warps, limiter)
    assert r.occupancy == pytest.approx(occ)
    assert blocks == min(r.limit_warps, r.limit_registers, r.limit_shared_memory, r.limit_blocks)


def test_per_resource_limits_and_ties():
    # sm_75 1024 x 64: warps 1, registers 1, blocks 16, shared memory unused.
    r = occupancy("sm_75", 1024, 64)
    assert (r.limit_warps, r.limit_registers, r.limit_blocks, r.limit_shared_memory) == (1, 1, 16, UNLIMITED)
    assert r.limiters == ("warps", "registers")
    # Allocations: 64*32 = 2048 regs/warp x 32 warps; sm_80 33 regs -> 1280 x 8 warps.
    assert r.registers_per_block == 65536
    assert occupancy("sm_80", 256, 33).registers_per_block == 1280 * 8
    # 100 B static on sm_80: 100 + 1024 = 1124 -> 1152 (9 x 128).
    assert occupancy("sm_80", 32, 8, static_smem=100).smem_allocated_per_block == 1152
    # A kernel without registers is not limited by them.
    assert occupancy("sm_90", 64, 0).limit_registers == UNLIMITED


def test_static_and_dynamic_add_up():
    a = occupancy("sm_80", 128, 32, static_smem=30 * KIB, dynamic_smem=18 * KIB)
    b = occupancy("sm_80", 128, 32, dynamic_smem=48 * KIB)
    assert a.active_blocks_per_sm == b.active_blocks_per_sm == 3


def test_arch_spellings_and_gpu():
    ref = occupancy("sm_80", 256, 128)
    for arch in ("8.0", "80", (8, 0), get_gpu("A100")):
        assert occupancy(arch, 256, 128) == ref


def test_waves():
    # 2 blocks/SM on H100's 132 SMs: 400 / 264 = 1.5152 waves -> 2, efficiency 0.7576.
    r = occupancy("sm_90", 256, 128)
    assert r.active_blocks_per_sm == 2
    w = r.waves(400, 132)
    assert w.waves == pytest.approx(400 / 264)
    assert w.rounded == 2
    assert w.efficiency == pytest.approx((400 / 264) / 2)
    full = r.waves(264 * 3, 132)
    assert (full.waves, full.rounded, full.efficiency) == (3.0, 3, 1.0)
    with pytest.raises(ValueError, match="cannot run"):
        occupancy("sm_80", 800, 80).waves(10, 108)
    with pytest.raises(ValueError, match="grid_blocks"):
        r.waves(0, 132)


@pytest.mark.parametrize("kwargs,name", [
    (dict(threads_per_block=1025, registers_per_thread=32), "threads_per_block"),
    (dict(threads_per_block=0, registers_per_thread=32), "threads_per_block"),
    (dict(threads_per_block=128, registers_per_thread=256), "registers_per_thread"),
    (dict(threads_per_block=128, registers_per_thread=-1), "registers_per_thread"),
    (dict(threads_per_block=128.0, registers_per_thread=32), "threads_per_block"),
    (dict(threads_per_block=128, registers_per_thread=32, static_smem=-4), "static_smem"),
    # 163 KiB is sm_80's opt-in maximum per block.
    (dict(threads_per_block=128, registers_per_thread=32, dynamic_smem=163 * KIB + 1), "dynamic_smem"),
])
def test_bad_input_names_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        occupancy("sm_80", **kwargs)


def test_per_block_limit_is_per_arch():
    occupancy("sm_80", 128, 32, dynamic_smem=163 * KIB)          # the opt-in maximum fits
    occupancy("sm_90", 128, 32, dynamic_smem=227 * KIB)
    for arch, limit in (("sm_75", 64 * KIB), ("sm_86", 99 * KIB), ("sm_89", 99 * KIB), ("sm_90", 227 * KIB)):
        with pytest.raises(ValueError, match="dynamic_smem"):
            occupancy(arch, 128, 32, static_smem=1024, dynamic_smem=limit - 1023)
    with pytest.raises(ValueError, match="arch"):
        occupancy("sm_70", 128, 32)
