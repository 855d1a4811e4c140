"""Fuzz every public op (tests/fuzz_worker.py) in a subprocess, so that a crash or a hang is a test
failure that names the call, not a lost test run.

Bad input must give a ValueError / TypeError that starts with the op's name, or a result; the numpy
and emulator backends must agree; independent references must agree; memory and time per call are
bounded (see the worker's docstring). The calls are drawn by hypothesis from a fixed seed, so a run
is reproducible: ``PYGPU_OPS_FUZZ_SEED`` (default 0) picks another seed, ``PYGPU_OPS_FUZZ_EXAMPLES``
(default 250 per op) and ``PYGPU_OPS_FUZZ_BUDGET`` (seconds, default 40) run it longer, e.g.

    PYGPU_OPS_FUZZ_EXAMPLES=2000 PYGPU_OPS_FUZZ_BUDGET=1800 python -m pytest tests/test_bad_inputs.py

or, without pytest, ``python tests/fuzz_worker.py --seed 3 --examples 500 --ops max_pool2d`` (a
crash there is the shell's "Segmentation fault" right after the ``CALL`` line that caused it).
Within the budget each op gets an equal share of the time; past it, the remaining examples are skipped.
"""
from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("hypothesis", reason="the fuzz test draws its calls with hypothesis (pip install hypothesis)")

WORKER = Path(__file__).with_name("fuzz_worker.py")
ROOT = WORKER.parent.parent
SEED = int(os.environ.get("PYGPU_OPS_FUZZ_SEED", "0"))
EXAMPLES = int(os.environ.get("PYGPU_OPS_FUZZ_EXAMPLES", "250"))
BUDGET = float(os.environ.get("PYGPU_OPS_FUZZ_BUDGET", "40"))
# A call that prints nothing for this long is a hang (it covers building a kernel module too).
HANG_S = float(os.environ.get("PYGPU_OPS_FUZZ_HANG", "60"))


def run_worker(ops, *, budget=BUDGET, examples=EXAMPLES, seed=SEED, hang_s=HANG_S, env=None):
    """Run the worker over ``ops`` (restarting it after a crash or a hang, on the next op).
    Returns (failures, log): failure lines with their reproducers, and the notes worth showing."""
    failures, notes = [], []
    remaining = list(ops)
    t_end = time.monotonic() + budget
    while remaining:
        left = max(1.0, t_end - time.monotonic())
        cmd = [sys.executable, str(WORKER), "--seed", str(seed), "--examples", str(examples),
               "--budget", f"{left:.1f}", "--ops", ",".join(remaining)]
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env={**os.environ, "MALLOC_ARENA_MAX": "2", **(env or {})}, start_new_session=True)
        sel = selectors.DefaultSelector()
        sel.register(proc.stdout, selectors.EVENT_READ)
        current, last_call, done, hung, tail = None, None, False, False, []
        while True:
            if not sel.select(timeout=hang_s):
                hung = True
                os.killpg(proc.pid, signal.SIGKILL)
                break
            line = proc.stdout.readline()
            if not line:
                break
            line = line.rstrip("\n")
            if line.startswith("CALL "):
                last_call = line
                continue
            tail = (tail + [line])[-20:]
            if line.startswith("BEGIN "):
                current, last_call = line.split()[1], None
            elif line.startswith("FAIL "):
                failures.append(line[5:])
            elif line.startswith(("END ", "NOTE ")):
                notes.append(line)
            elif line.startswith("ALLDONE"):
                done = True
        proc.wait()
        sel.close()
        if done:
            break
        what = f"hang: no output for {hang_s:.0f} s" if hung else f"crash: exit status {proc.returncode}"
        if current is None:
            failures.append(f"worker: {what} before the first op\n" + "\n".join(tail))
            break
        failures.append(f"{current}: {what} :: " + (last_call or "(no call yet: warm-up)") +
                        ("" if hung else "\n    last output: " + " | ".join(tail[-3:])))
        remaining = remaining[remaining.index(current) + 1:]
        if time.monotonic() > t_end:
            failures.append(f"budget spent; not run: {remaining}")
            break
    return failures, notes


def _all_ops():
    sys.path.insert(0, str(WORKER.parent))
    try:
        import fuzz_worker
    finally:
        sys.path.pop(0)
    return list(fuzz_worker.OPS)


@pytest.mark.emulator
def test_fuzz_every_op():
    failures, notes = run_worker(_all_ops())
    report = "\n".join(f"  {f}" for f in failures)
    assert not failures, (f"{len(failures)} kinds of failure (seed {SEED}, {EXAMPLES} examples per op; each with "
                          f"its first reproducer, 'BACKEND' = 'numpy' / 'emulator'):\n{report}\n"
                          + "\n".join(n for n in notes if n.startswith("END")))


def test_harness_reports_crash_hang_memory_disagreement_and_leaked_errors():
    """The harness itself: a fake op that segfaults, one that hangs, one that allocates far more
    than its result, one whose backends disagree, one that leaks an internal error: each is reported
    with its call, and the ops after a crash or a hang still run."""
    ops = ["_crash", "_leak", "_hang", "_memory", "_disagree", "_fine"]
    # hang_s: a restarted worker re-imports and may rebuild an emulator module before its next line
    # of output, which took over 3 s on a loaded 2-core machine; 10 s keeps a real hang obvious.
    failures, notes = run_worker(ops, budget=90, examples=3, hang_s=10, env={"PYGPU_OPS_FUZZ_SELFTEST": "1"})
    text = "\n".join(failures)
    assert "_crash: crash: exit status -11 :: CALL _crash #1: po._crash(" in text, text
    assert "_hang: hang: no output for 10 s :: CALL _hang #1: po._hang(" in text, text
    assert "_memory: MemoryError" in text and "_leak: raised OverflowError" in text, text
    assert "_leak: ValueError not from the op's checks" in text, text
    assert "_disagree: backends disagree" in text or "emulator" not in text, text
    assert not any(f.startswith("_fine") for f in failures), text
    assert any(n.startswith("END _fine 3 examples") for n in notes), notes
