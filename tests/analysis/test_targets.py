"""The SASS target check (``pygpu-ops check --sass``): each kind of target passes and fails on
kernels whose SASS is known, and the registered targets hold."""
from __future__ import annotations

import pytest

from pygpu_ops import cli
from pygpu_ops.analysis import sass, targets
from pygpu_ops.analysis.targets import Target

pytestmark = pytest.mark.skipif(sass.why_unavailable(13) is not None,
                                reason=f"SASS unavailable: {sass.why_unavailable(13)}")


def _one(target, nvrtc=13):
    (r,) = targets.check([nvrtc], ["sm_90"], targets=[Target(**{**target.__dict__,
                                                                "archs": ("sm_90",)})])
    return r


def test_fast_path_share():
    # sgemm_naive's loop: one FFMA in about 5.5 instructions
    assert _one(Target("sgemm_naive", "test", min_fastpath_math=0.15)).ok
    r = _one(Target("sgemm_naive", "test", min_fastpath_math=0.5))
    assert not r.ok and "fast-path math 18.2% < 50.0%" in r.failures[0]
    assert "MISS" in r.line() and "sgemm_naive<32, 32>" in r.line()


def test_at_least_as():
    assert _one(Target("sgemm_warptile", "test", at_least_as="sgemm_naive")).ok
    r = _one(Target("sgemm_naive", "test", at_least_as="sgemm_warptile"))
    assert not r.ok and "sgemm_warptile's" in r.failures[0]


def test_no_local_and_require_and_calls():
    assert _one(Target("sgemm_naive", "test", no_local=True, no_calls=True)).ok
    r = _one(Target("sgemm_naive", "test", require=("LDSM", "LDG.32")))
    assert not r.ok and r.failures == ["no LDSM"] and r.figures["LDG.32"] > 0


def test_instruction_bounds():
    r = _one(Target("sgemm_warptile", "test", max_instructions_vs=("sgemm_naive", 1.5)))
    assert not r.ok and "sgemm_naive's" in r.failures[0]
    assert _one(Target("sgemm_naive", "test", max_instructions=10_000)).ok
    assert not _one(Target("sgemm_naive", "test", max_instructions=10)).ok


def test_unknown_symbol_is_an_error():
    with pytest.raises(ValueError, match="no registered kernel"):
        targets.check([13], targets=[Target("nope", "test")])


def test_registered_targets_hold(capsys):
    """The gate itself, as CI runs it (every registered target, NVRTC 12 and 13 where present)."""
    majors = [m for m in (12, 13) if sass.why_unavailable(m) is None]
    args = ["check", "--sass"] + [a for m in majors for a in ("--nvrtc", str(m))]
    rc = cli.main(args)
    out = capsys.readouterr().out
    assert rc == 0, out
    assert "check --sass passed" in out


def test_cli_reports_a_miss(monkeypatch, capsys):
    monkeypatch.setattr(targets, "TARGETS", (Target("sgemm_naive", "test", min_fastpath_math=0.9,
                                                    archs=("sm_90",)),))
    assert cli.main(["check", "--sass", "--nvrtc", "13"]) == 1
    captured = capsys.readouterr()
    assert "MISS sgemm_naive<32, 32>" in captured.out
    assert "check --sass FAILED: 1 of 1 SASS targets missed" in captured.err
