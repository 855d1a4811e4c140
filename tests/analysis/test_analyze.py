"""``pygpu-ops analyze``: every row has the fixed keys, and the SGEMM ladder shows the trends its
steps claim (coalescing, shared traffic falling with register blocking, the FFMA share rising)."""
from __future__ import annotations

import json

import pytest

from pygpu_ops._runtime import backends

pytestmark = pytest.mark.skipif(backends.problem("emulator") is not None,
                                reason=f"emulator unavailable: {backends.problem('emulator')}")


@pytest.fixture(scope="module")
def doc():
    from pygpu_ops.analysis import analyze

    # small GEMMs and every block of them: exact counts, a few seconds
    return analyze.analyze(ops=["gemm", "int8_gemm"], sizes=[256], sample_blocks=None)


@pytest.fixture(scope="module")
def others():
    from pygpu_ops.analysis import analyze

    return analyze.analyze(ops=["softmax", "pooling", "elementwise", "conv"], sample_blocks=2)


def _sass_ok(rows):
    return all(r.get("compiler") for r in rows)


def _by_variant(doc, group="sgemm"):
    return {r["variant"]: r for r in doc["rows"] if r.get("group") == group}


def test_every_row_has_the_keys(doc, others):
    from pygpu_ops.analysis.analyze import ROW_KEYS

    rows = doc["rows"] + others["rows"]
    assert all(r["status"] == "ok" for r in rows), [r for r in rows if r["status"] != "ok"]
    for r in rows:
        missing = set(ROW_KEYS) - set(r)
        assert not missing, (r["op"], r["variant"], missing)
    json.dumps(doc)  # serializable
    ops = {r["op"] for r in rows}
    assert {"gemm", "int8_gemm", "softmax", "max_pool2d", "avg_pool2d", "global_avg_pool2d",
            "relu", "nchw_to_nhwc", "nhwc_to_nchw", "im2col", "conv2d"} <= ops
    from pygpu_ops import linalg, quantization

    assert set(_by_variant(doc)) == set(linalg.sgemm_variants())
    assert {r["variant"] for r in doc["rows"] if r["op"] == "int8_gemm"} == \
        set(quantization.int8_gemm_variants())


def test_counts_are_exact_at_small_sizes_and_sampled_at_large(doc, others):
    assert all(r["counts"] == "exact" for r in doc["rows"])
    relu = next(r for r in others["rows"] if r["op"] == "relu")
    assert relu["blocks_run"] == 2 and relu["counts"].startswith("extrapolated from 2 of")
    # 2**26 floats in float4 loads: 2**24 lanes, 2**19 warps, 16 sectors each
    assert relu["gld_requests"] == 2 ** 19 and relu["gld_sectors"] == 2 ** 23


def test_ladder_coalescing(doc):
    v = _by_variant(doc)
    naive, coal = v["naive"], v["coalesced"]
    assert naive["gld_requests"] == coal["gld_requests"]
    # naive: lanes walk down columns of B and rows of A; coalesced: one broadcast + 4 sectors
    assert naive["gld_sectors"] / naive["gld_requests"] > 8
    assert coal["gld_sectors"] / coal["gld_requests"] == pytest.approx(2.5)
    for step in ("smem_tiled", "blocktile_1d", "blocktile_2d"):
        assert v[step]["gld_sectors"] / v[step]["gld_requests"] == pytest.approx(4.0)
    for step in ("vectorized", "double_buffered", "warptile"):  # float4 global loads
        assert v[step]["gld_sectors"] / v[step]["gld_requests"] == pytest.approx(16.0)


def test_ladder_shared_traffic_falls_with_register_blocking(doc):
    v = _by_variant(doc)
    flops = 2 * 256 ** 3
    per_flop = [v[s]["lds_wavefronts"] / flops for s in
                ("smem_tiled", "blocktile_1d", "blocktile_2d", "vectorized")]
    assert per_flop == sorted(per_flop, reverse=True) and per_flop[0] > 4 * per_flop[-1]
    assert v["smem_tiled"]["smem_bank_conflicts"] == 0
    # step 5's header names its 2-way (As) and 4-way (Bs) conflicts; step 6 removes them
    assert v["blocktile_2d"]["smem_bank_conflicts"] > 0
    assert v["vectorized"]["smem_bank_conflicts"] == 0
    # DGEMM's transposing A stores were 2-way conflicted until its A_PAD (found by this analysis)
    (dgemm,) = _by_variant(doc, "dgemm").values()
    assert dgemm["smem_bank_conflicts"] == 0 and dgemm["sts_requests"] > 0


def test_ladder_ffma_share_rises(doc):
    if not _sass_ok(doc["rows"]):
        pytest.skip(f"SASS unavailable: {doc['rows'][0].get('unavailable')}")
    v = _by_variant(doc)
    share = [v[s]["loop_ffma_fraction"] for s in ("naive", "smem_tiled", "blocktile_1d",
                                                  "vectorized", "warptile")]
    assert share == sorted(share) and share[-1] > 0.8
    for r in doc["rows"]:
        assert r["modeled_us"] > 0 and r["bound"] and 0 < r["occupancy"] <= 1
        assert r["compiler"].startswith("NVRTC 13") and r["gpu"] == "H200"


def test_table_and_plot(doc, tmp_path):
    from pygpu_ops.analysis import analyze

    text = analyze.format_table(doc)
    assert "modeled, not measured" in text and "warptile" in text
    pytest.importorskip("matplotlib")
    paths = analyze.plot(doc, str(tmp_path))
    assert any(p.endswith("analyze_sgemm.png") for p in paths)


def test_failed_case_is_a_row():
    from pygpu_ops.analysis import analyze, cases

    def boom(be):
        raise RuntimeError("no")

    c = cases.Case("gemm", "x", "1", boom, {})
    row = analyze._failed(c, RuntimeError("no"))
    assert row["status"] == "failed" and row["error"]["type"] == "RuntimeError"
    with pytest.raises(ValueError, match="unknown op families"):
        cases.cases(["nope"])
