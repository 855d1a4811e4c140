"""SASS statistics: the classifier and the loop analysis on hand-built inputs, then real kernels
compiled by NVRTC 12 and 13 and disassembled by nvdisasm (skipped, with the reason, where missing).
"""
from __future__ import annotations

import json

import pytest

from pygpu_ops._runtime import compile_gate, kernels
from pygpu_ops.analysis import sass
from pygpu_ops.analysis.sass import Instruction


def _needs(*majors, arch="sm_90"):
    why = [w for w in (sass.why_unavailable(m, arch) for m in majors) if w]
    return pytest.mark.skipif(bool(why), reason="; ".join(why))


# ------------------------------------------------------------------------------------------------
# Classifier
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("opcode, operands, expected", [
    ("FFMA", "R1,R2,R3,R4", "FFMA"),
    ("FFMA.FTZ.RM", "R1,R2,R3,R4", "FFMA"),
    ("FMUL.FTZ", "R1,R2,R3", "FMUL"),
    ("FADD.FTZ.SAT", "R1,R2,R3", "FADD"),
    ("DFMA", "R2,R4,R6,R8", "DFMA"),
    ("DMUL.RP", "R2,R4,R6", "DMUL"),
    ("DADD", "R2,R4,R6", "DADD"),
    ("HFMA2", "R1,R2,R3,R4", "HFMA2"),
    ("HFMA2.MMA", "R76,-RZ,RZ,0,0", "other"),            # the move idiom: a zero product
    ("HFMA2.MMA", "R5,R2,-RZ,1.875,0", "other"),
    ("IMAD.MOV.U32", "R1,RZ,RZ,0x4", "IMAD"),
    ("IMAD.WIDE.U32", "R2,R3,0x4,R4", "IMAD"),
    ("IADD3.X", "R1,R2,R3,RZ,P0,!PT", "IADD3"),
    ("VIADD", "R1,R2,0x1", "other"),
    ("IDP.4A.S8.S8", "R1,R2,R3,R4", "IDP4A"),
    ("IDP4A.S8.S8", "R1,R2,R3,R4", "IDP4A"),
    ("IDP.2A.LO.S16.S8", "R1,R2,R3,R4", "other"),
    ("IMMA.16832.S8.S8", "R4,R8,R12,R4", "IMMA"),
    ("HMMA.16816.F32", "R4,R8,R12,R4", "HMMA"),
    ("MUFU.EX2", "R1,R2", "MUFU"),
    ("LDS", "R1,[R2]", "LDS.32"),
    ("LDS.U8", "R1,[R2]", "LDS.32"),
    ("LDS.64", "R2,[R4]", "LDS.64"),
    ("LDS.U.128", "R4,[R8+0x10]", "LDS.128"),
    ("LDS.128", "R4,[R8]", "LDS.128"),
    ("LDSM.16.M88.4", "R4,[R8]", "LDSM"),
    ("LDG.E", "R1,desc[UR4][R2.64]", "LDG.32"),
    ("LDG.E.U8.CONSTANT", "R1,desc[UR4][R2.64]", "LDG.32"),
    ("LDG.E.64.CONSTANT", "R2,desc[UR4][R2.64]", "LDG.64"),
    ("LDG.E.128.CONSTANT", "R4,desc[UR4][R2.64]", "LDG.128"),
    ("STG.E.128", "desc[UR4][R2.64],R4", "STG.128"),
    ("STG.E.U8", "desc[UR4][R2.64],R4", "STG.32"),
    ("STS.64", "[R2],R4", "STS.64"),
    ("STS", "[R2],R4", "STS.32"),
    ("LDGSTS.E.BYPASS.128", "[R1],desc[UR4][R2.64]", "LDGSTS"),
    ("LDGDEPBAR", "", "other"),
    ("LDL.128", "R4,[R1]", "LDL"),
    ("STL.U8", "[R1],R4", "STL"),
    ("BAR.SYNC.DEFER_BLOCKING", "0x0", "BAR"),
    ("SHFL.BFLY", "PT,R1,R2,0x1,0x1f", "SHFL"),
    ("BRA", "0x300", "BRA"),
    ("BSSY", "B0,0xaf0", "other"),
    ("LDC.64", "R2,c[0x0][0x210]", "other"),
    ("ISETP.GE.AND", "P0,PT,R1,R2,PT", "other"),
])
def test_classify(opcode, operands, expected):
    assert sass.classify(opcode, operands) == expected
    assert expected in sass.CLASSES


def test_classify_refuses_a_non_opcode():
    with pytest.raises(ValueError, match="opcode"):
        sass.classify("")


# ------------------------------------------------------------------------------------------------
# Dominators, back edges, natural loops, the fast path: hand-built graphs
# ------------------------------------------------------------------------------------------------
def test_dominators_of_a_diamond_and_an_unreachable_node():
    succ = {0: [1, 2], 1: [3], 2: [3], 3: [], 9: [3]}
    assert sass.dominators(succ, 0) == {0: 0, 1: 0, 2: 0, 3: 0}
    assert sass.back_edges(succ, 0) == [] and sass.natural_loops(succ, 0) == []


def test_nested_loops_and_the_innermost_one():
    # 0 -> 1 (outer header) -> 2 (inner header) -> 3 -> {2, 4}; 4 -> {1, 5}
    succ = {0: [1], 1: [2], 2: [3], 3: [2, 4], 4: [1, 5], 5: []}
    idom = sass.dominators(succ, 0)
    assert idom == {0: 0, 1: 0, 2: 1, 3: 2, 4: 3, 5: 4}
    assert sass.dominates(idom, 1, 4) and not sass.dominates(idom, 4, 1)
    assert sorted(sass.back_edges(succ, 0)) == [(3, 2), (4, 1)]
    loops = sass.natural_loops(succ, 0)
    assert [(lp.header, set(lp.body), lp.latches) for lp in loops] == [(1, {1, 2, 3, 4}, (4,)), (2, {2, 3}, (3,))]
    assert [lp.header for lp in sass.innermost_loops(loops)] == [2]


def test_an_irreducible_cycle_is_no_loop():
    # 1 and 2 are both entered from 0: neither dominates the other
    succ = {0: [1, 2], 1: [2], 2: [1, 3], 3: []}
    assert sass.dominators(succ, 0) == {0: 0, 1: 0, 2: 0, 3: 2}
    assert sass.back_edges(succ, 0) == [] and sass.natural_loops(succ, 0) == []


def test_back_edges_to_one_header_make_one_loop_and_a_self_loop_is_a_loop():
    succ = {0: [1], 1: [2, 3], 2: [1], 3: [1, 4], 4: [4, 5], 5: []}
    loops = sass.natural_loops(succ, 0)
    assert [(lp.header, set(lp.body), sorted(lp.latches)) for lp in loops] == [(1, {1, 2, 3}, [2, 3]), (4, {4}, [4])]
    assert len(sass.innermost_loops(loops)) == 2


def test_fast_path_takes_the_largest_summed_weight():
    # header 1 -> {2, 3} -> 4 (latch) -> 1; weights (math, memory bytes, -instructions)
    succ = {0: [1], 1: [2, 3], 2: [4], 3: [4], 4: [1, 5], 5: []}
    (loop,) = sass.natural_loops(succ, 0)
    weight = {1: (0, 0, -3), 2: (4, 0, -10), 3: (4, 0, -6), 4: (1, 0, -2)}
    assert sass.best_path(loop, succ, weight) == [1, 3, 4]      # equal math: fewer instructions
    weight[2] = (4, 16, -10)
    assert sass.best_path(loop, succ, weight) == [1, 2, 4]      # equal math: more bytes moved
    weight[3] = (5, 0, -30)
    assert sass.best_path(loop, succ, weight) == [1, 3, 4]      # more math first


@pytest.mark.parametrize("opcode, expected", [
    ("LDG.E", 4), ("LDG.E.U8.CONSTANT", 1), ("LDG.E.S16", 2), ("LDG.E.64.CONSTANT", 8), ("LDG.E.128", 16),
    ("STG.E.U8", 1), ("LDS.U.128", 16), ("STS.64", 8), ("LDGSTS.E.BYPASS.128", 16), ("LDSM.16.M88.4", 16),
    ("LDSM.16.MT88.2", 8), ("LDL.128", 0), ("FFMA", 0), ("LDC.64", 0),
])
def test_memory_bytes(opcode, expected):
    assert sass.memory_bytes(Instruction(0, opcode, "")) == expected


def test_fast_path_through_an_irreducible_region_inside_a_loop():
    # loop 1..4 holds the irreducible cycle 2 <-> 3 (both entered from 1)
    succ = {0: [1], 1: [2, 3], 2: [3], 3: [2, 4], 4: [1, 5], 5: []}
    (loop,) = sass.natural_loops(succ, 0)
    assert set(loop.body) == {1, 2, 3, 4} and sass.innermost_loops([loop]) == [loop]
    weight = {1: (0, -1), 2: (8, -9), 3: (1, -1), 4: (0, -1)}
    assert sass.best_path(loop, succ, weight) == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------
# Basic blocks from instruction lists
# ------------------------------------------------------------------------------------------------
def _code(*rows):
    """Instructions from (predicate, opcode, operands), 16 bytes apart."""
    return [Instruction(16 * i, op, ops, pred) for i, (pred, op, ops) in enumerate(rows)]


def test_blocks_split_at_branches_targets_and_exits():
    code = _code(
        ("", "S2R", "R0,SR_TID.X"),            # 0x00  block 0
        ("@P0", "EXIT", ""),                   # 0x10  conditional exit: falls through
        ("", "FFMA", "R1,R1,R1,R1"),           # 0x20  block 1 (loop header)
        ("@!PT", "BRA", "0x60"),               # 0x30  never taken: straight-line
        ("", "CALL.REL.NOINC", "0x70"),        # 0x40  returns here: no block end
        ("@P1", "BRA", "P2,0x20"),             # 0x50  back edge, conditional
        ("", "EXIT", ""),                      # 0x60  block 2
        ("", "MUFU.RCP", "R1,R1"),             # 0x70  block 3: the subroutine
        ("", "RET.REL.NODEC", "R2,0x0"),       # 0x80
        ("", "BRA", "0x90"),                   # 0x90  block 4: the trailing self-loop
        ("", "NOP", ""),
    )
    blocks = sass.basic_blocks(code)
    assert [(b.first, b.stop, b.succs) for b in blocks] == [
        (0, 2, [1]), (2, 6, [1, 2]), (6, 7, []), (7, 9, []), (9, 10, [4]), (10, 11, [])]
    assert len(sass.strip_padding(code)) == 10
    lp = sass.hot_loop(sass.strip_padding(code))
    assert (lp.loops, lp.header, lp.instructions, lp.math, lp.fast_instructions) == (1, 0x20, 4, 1, 4)


def test_an_unconditional_branch_does_not_fall_through_and_a_bad_target_is_an_error():
    code = _code(("", "BRA", "0x20"), ("", "FFMA", "R1,R1,R1,R1"), ("", "EXIT", ""))
    assert [b.succs for b in sass.basic_blocks(code)] == [[2], [2], []]
    with pytest.raises(ValueError, match="targets 0x28"):
        sass.basic_blocks(_code(("", "BRA", "0x28"), ("", "EXIT", "")))


# ------------------------------------------------------------------------------------------------
# Errors
# ------------------------------------------------------------------------------------------------
def test_missing_tools_raise_sass_unavailable(monkeypatch):
    monkeypatch.setattr(sass, "_NVDISASM", [])
    monkeypatch.setattr(sass, "_nvdisasm_candidates", lambda: [])
    with pytest.raises(sass.SassUnavailable, match="nvdisasm not found: pip install"):
        sass.load_nvdisasm()
    assert issubclass(sass.SassUnavailable, compile_gate.GateUnavailable)

    def no_nvrtc(major):
        raise compile_gate.GateUnavailable(f"NVRTC {major} not found")

    monkeypatch.setattr(compile_gate, "load_nvrtc", no_nvrtc)
    assert sass.why_unavailable(12) == "NVRTC 12 not found"
    with pytest.raises(sass.SassUnavailable, match="NVRTC 13 not found"):
        sass.sass_stats(kernels.Kernel("sgemm/01_naive.cu", "sgemm_naive", (32, 32)))


def test_bad_arguments_name_themselves():
    k = kernels.Kernel("sgemm/01_naive.cu", "sgemm_naive", (32, 32))
    with pytest.raises(ValueError, match="arch must look like 'sm_90'"):
        sass.sass_stats(k, arch="90")
    with pytest.raises(TypeError, match="kernel must be"):
        sass.sass_stats("sgemm_naive")


@_needs(13)
def test_disassemble_checks_its_input():
    with pytest.raises(ValueError, match="cubin must be"):
        sass.disassemble(b"not an ELF", "sm_90")


# ------------------------------------------------------------------------------------------------
# Real kernels through NVRTC and nvdisasm
# ------------------------------------------------------------------------------------------------
FMA_LOOP = """
__global__ void fma_loop(const float* in, float* out, int n)
{
    float a = in[0], b = in[1], c = in[2], d = in[3];
#pragma unroll 1
    for (int i = 0; i < n; ++i) {
        a = a * b + c;
        b = b * c + d;
        c = c * d + a;
        d = d * a + b;
    }
    out[threadIdx.x] = a + b + c + d;
}
"""
STRAIGHT = """
__global__ void axpy1(const float* x, float* y, float a)
{
    const int i = threadIdx.x;
    y[i] = a * x[i] + y[i];
}
"""

CP_LDSM = """
__global__ void cp_ldsm(const float* g, unsigned* out)
{
    __shared__ alignas(16) float s[32 * 4];
    const unsigned sa = (unsigned)__cvta_generic_to_shared(&s[threadIdx.x * 4]);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;\\n" :: "r"(sa), "l"(g + threadIdx.x * 4) : "memory");
    asm volatile("cp.async.commit_group;\\n" ::: "memory");
    asm volatile("cp.async.wait_all;\\n" ::: "memory");
    __syncthreads();
    unsigned r0, r1, r2, r3;
    asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\\n"
                 : "=r"(r0), "=r"(r1), "=r"(r2), "=r"(r3) : "r"(sa));
    out[threadIdx.x] = r0 + r1 + r2 + r3;
}
"""


def _backward_branch_span(code):
    """Instructions from the target of the one backward branch through that branch: the loop of a
    single-block loop, found from the listing alone."""
    back = [i for i in code if i.opcode.startswith("BRA") and int(i.operands.split(",")[-1], 16) <= i.offset]
    back = [i for i in back if int(i.operands.split(",")[-1], 16) != i.offset]   # not the trailing self-loop
    assert len(back) == 1, back
    start = int(back[0].operands.split(",")[-1], 16)
    return [i for i in code if start <= i.offset <= back[0].offset]


@pytest.mark.parametrize("major, arch", [pytest.param(13, "sm_90", marks=_needs(13), id="nvrtc13-sm_90"),
                                         pytest.param(12, "sm_86", marks=_needs(12, arch="sm_86"), id="nvrtc12-sm_86")])
def test_a_known_loop_of_four_ffma(cuda_dir, major, arch):
    """NVRTC 12 cubins too: nvdisasm 13 turns its dataflow analysis (and -cfg) off for them."""
    (cuda_dir / "fma_loop.cu").write_text(FMA_LOOP)
    s = sass.sass_stats(kernels.Kernel("fma_loop.cu", "fma_loop"), arch, major)
    assert s.compiler.startswith(f"NVRTC {major}.") and s.arch == arch and s.label == f"{s.compiler}, {arch}"
    assert s.loops == 1 and s.loop_blocks == 1 and s.fastpath_blocks == 1
    assert s.loop_math == 4 and s.loop_mix["FFMA"] == 4 and s.mix["FFMA"] == 4 and s.mix["FADD"] == 3
    code = sass.strip_padding(sass.kernel_sass(kernels.Kernel("fma_loop.cu", "fma_loop"), arch, major))
    span = _backward_branch_span(code)
    assert s.loop_header == span[0].offset and s.loop_instructions == len(span)
    assert sum(i.opcode.startswith("FFMA") for i in span) == 4
    assert s.loop_math_fraction == pytest.approx(4 / len(span))
    assert s.loop_instr_per_math == pytest.approx(len(span) / 4)
    assert (s.fastpath_instructions, s.fastpath_math) == (s.loop_instructions, 4)
    assert s.registers > 0 and s.spill_bytes == 0 and s.instructions == len(code)
    assert json.loads(json.dumps(s.as_json()))["loop_mix"]["FFMA"] == 4


@_needs(13)
def test_a_kernel_without_a_loop(cuda_dir):
    (cuda_dir / "axpy1.cu").write_text(STRAIGHT)
    s = sass.sass_stats(kernels.Kernel("axpy1.cu", "axpy1"))
    assert s.loops == 0 and s.loop_header is None and s.loop_instructions == 0
    assert s.loop_math_fraction is None and s.loop_instr_per_math is None
    assert s.fastpath_math_fraction is None and s.fastpath_instr_per_math is None
    assert (s.mix["FFMA"], s.mix["LDG.32"], s.mix["STG.32"]) == (1, 2, 1)
    assert sum(s.mix.values()) == s.instructions
    json.dumps(s.as_json())


@_needs(13)
def test_the_plain_listing_parses_like_the_json(cuda_dir):
    (cuda_dir / "fma_loop.cu").write_text(FMA_LOOP)
    k = kernels.Kernel("fma_loop.cu", "fma_loop")
    res, _, error = compile_gate.build_module([k], "sm_90", compile_gate.load_nvrtc(13), output="cubin")
    assert error is None
    tool = sass.load_nvdisasm()
    listing = sass.parse_listing(tool.run(res.output, "-c").stdout)
    assert listing == tool.disassemble(res.output, "sm_90")
    assert any(i.opcode == "BRA" for i in listing[res.lowered["fma_loop"]])
    with pytest.raises(ValueError, match="arch is 'sm_80' but the cubin is for sm_90"):
        tool.disassemble(res.output, "sm_80")


@_needs(13)
def test_results_are_cached_on_disk(cuda_dir, tmp_path, monkeypatch):
    (cuda_dir / "fma_loop.cu").write_text(FMA_LOOP)
    monkeypatch.setenv("PYGPU_OPS_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(sass, "_MEMO", {})
    before = dict(sass.stats)
    k = kernels.Kernel("fma_loop.cu", "fma_loop")
    first = sass.sass_stats(k)
    assert sass.stats["compiled"] == before["compiled"] + 1
    assert sass.sass_stats(k) == first and sass.stats["compiled"] == before["compiled"] + 1   # in-process memo
    monkeypatch.setattr(sass, "_MEMO", {})
    assert sass.sass_stats(k) == first and sass.stats["loaded"] == before["loaded"] + 1
    (entry,) = (tmp_path / "cache" / "sass").glob("*.json")
    entry.write_text(entry.read_text()[:100])                # truncated: compiled again
    monkeypatch.setattr(sass, "_MEMO", {})
    assert sass.sass_stats(k) == first and sass.stats["compiled"] == before["compiled"] + 2


LADDER = ["sgemm_naive", "sgemm_smem_tiled", "sgemm_blocktile_1d", "sgemm_blocktile_2d", "sgemm_warptile"]


@_needs(13)
def test_the_sgemm_ladder_raises_the_hot_loop_math_share():
    """Each step of the ladder spends a larger share of its hot loop on FFMA (sm_90, NVRTC 13)."""
    by_symbol = {k.symbol: k for k in kernels.all_kernels()}
    shares = [sass.sass_stats(by_symbol[name]).loop_math_fraction for name in LADDER]
    assert all(a < b for a, b in zip(shares, shares[1:])), dict(zip(LADDER, shares))
    vec = sass.sass_stats(by_symbol["sgemm_vectorized"])
    # The fast path of the vectorized step is its float4 iteration: all BK x TM x TN = 8 x 8 x 8
    # FFMA of a tile, without the element-by-element loads of the edge tiles.
    assert vec.fastpath_mix["FFMA"] == 512 and vec.fastpath_mix["LDG.32"] == 0
    assert vec.fastpath_math_fraction > vec.loop_math_fraction > shares[2]
    # The double-buffered step's fast path is a steady-state iteration, not the last tiles (which
    # skip the prefetch). An iteration runs two tiles, one per buffer: it loads the next two
    # 128 x 8 A and 8 x 128 B tiles, 2 x (4096 + 4096) bytes over 256 threads, from global memory
    # and stores them to shared memory.
    dbuf = sass.sass_stats(by_symbol["sgemm_double_buffered"]).fastpath_mix
    assert dbuf["FFMA"] == 2 * 512
    assert 4 * dbuf["LDG.32"] + 8 * dbuf["LDG.64"] + 16 * dbuf["LDG.128"] == 2 * 32
    assert 4 * dbuf["STS.32"] + 8 * dbuf["STS.64"] + 16 * dbuf["STS.128"] == 2 * 32


@_needs(13, arch="sm_80")
def test_cp_async_and_ldmatrix_as_ptxas_spells_them(cuda_dir):
    """One cp.async (16 bytes) and one ldmatrix .x4: no registered kernel uses either yet."""
    (cuda_dir / "cp_ldsm.cu").write_text(CP_LDSM)
    s = sass.sass_stats(kernels.Kernel("cp_ldsm.cu", "cp_ldsm"), "sm_80", 13)
    assert (s.mix["LDGSTS"], s.mix["LDSM"], s.mix["BAR"], s.mix["STG.32"]) == (1, 1, 1, 1)
    assert s.mix["LDG.128"] == 0 and s.loops == 0
