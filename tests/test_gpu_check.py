"""profiling/gpu_check.sh end to end (``--dry-run``: the GPU steps reported as skipped), and the
bare GPU machine it is written for, modelled here: hypothesis, scikit-learn, matplotlib and nvtx
unimportable, no C++ compiler. Collection must work and every skip must say why."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "profiling" / "gpu_check.sh"
BLOCKED = ("hypothesis", "sklearn", "matplotlib", "nvtx")



def _bare_shim(folder: Path) -> Path:
    """A folder that, first on PYTHONPATH, makes each BLOCKED package fail to import as it does
    where it is not installed (whatever finder pytest puts before the path finder)."""
    for name in BLOCKED:
        (folder / name).mkdir(parents=True)
        (folder / name / "__init__.py").write_text(
            f"raise ModuleNotFoundError(\"No module named '{name}'\", name='{name}')\n")
    return folder


def _env(tmp_path, bare: bool) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST_", "PYGPU_OPS_"))}
    env.update(PYTHON=sys.executable, PYTHONPATH=str(ROOT), PYTHONDONTWRITEBYTECODE="1")
    if bare:
        shim = _bare_shim(tmp_path / "bare")
        # hypothesis's pytest plugin (an entry point) would import it past the block: not there either
        env.update(PYTHONPATH=f"{shim}{os.pathsep}{ROOT}", CXX="/nonexistent",
                   PYTEST_ADDOPTS="-p no:hypothesispytest")
    return env


def _dry_run(tmp_path, env):
    if shutil.which("bash") is None or shutil.which("timeout") is None:
        pytest.skip("needs bash and coreutils' timeout")
    out = tmp_path / "out"
    proc = subprocess.run(["bash", str(SCRIPT), "--dry-run", str(out)], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    log = (out / "gpu_check.log").read_text()
    return proc, out, log


def test_the_script_header_says_how_results_are_recorded_and_the_budget():
    head = SCRIPT.read_text().split("set -uo pipefail")[0]
    assert "python profiling/update_readme.py --add OUT/bench.json --add-ncu OUT/ncu.json" in head
    assert "profiling/results/" in head and "timeout" in head
    caps = [int(line.split()[3]) for line in SCRIPT.read_text().splitlines() if line.startswith("step ")]
    assert len(caps) == 7 and sum(caps) <= 540 and "TOTAL_BUDGET=540" in SCRIPT.read_text()


def test_dry_run_end_to_end(tmp_path):
    proc, out, log = _dry_run(tmp_path, _env(tmp_path, bare=False))
    assert proc.returncode == 0, log[-3000:]
    assert "=== nvidia-smi: skipped (dry run: needs a GPU)" in log
    assert "=== selftest: skipped (dry run: needs a GPU)" in log
    assert "=== ncu: skipped (dry run: needs a GPU)" in log
    for name in ("info", "gpu-tests", "bench", "compile-gate"):
        assert f"=== {name}: exit " in log, name
    assert "=== info: exit 0" in log and "=== gpu-tests: exit 0" in log and "=== bench: exit 0" in log
    assert "gpu_check: status 0" in log
    files = sorted(p.name for p in out.iterdir())
    assert all(p.is_file() for p in out.iterdir()) and len(files) <= 8
    doc = json.loads((out / "bench.json").read_text())
    assert doc["meta"]["backend"] == "numpy" and doc["results"]
    assert all(r["status"] == "ok" and r["op_median_ms"] > 0 for r in doc["results"])
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        assert files == ["bench.json", "gpu_check.log"]
    else:
        assert files == ["bench.json", "gpu_check.log", "plots.tgz"]
        with tarfile.open(out / "plots.tgz") as tar:
            names = tar.getnames()
        assert "plots/gemm_float32.png" in names and all(n.count("/") <= 1 for n in names)


def test_dry_run_on_a_bare_machine(tmp_path):
    """No matplotlib: the bench writes its JSON, says why it drew nothing and exits 0."""
    env = _env(tmp_path, bare=True)
    env["GPU_CHECK_TESTS"] = "tests/test_interop.py tests/test_readme.py"
    proc, out, log = _dry_run(tmp_path, env)
    assert proc.returncode == 0, log[-3000:]
    assert "--plot: no charts drawn, matplotlib is not importable" in log
    assert sorted(p.name for p in out.iterdir()) == ["bench.json", "gpu_check.log"]
    assert "emulator  unavailable: no C++ compiler '/nonexistent'" in log
    assert "gpu_check: status 0" in log


def test_bare_machine_collects_and_every_skip_says_why(tmp_path):
    env = _env(tmp_path, bare=True)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "-p", "no:xdist",
         "tests/test_linalg.py", "tests/test_examples.py", "tests/test_readme.py", "tests/test_cli.py",
         "-k", "property or digits or readme or plots or info"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-4000:]
    skips = [line for line in out.splitlines() if line.startswith("SKIPPED")]
    assert skips and all(": " in line.split("tests/", 1)[1] for line in skips), skips
    assert any("hypothesis is not installed (No module named 'hypothesis')" in line and "test_linalg.py" in line
               for line in skips)
    assert any("could not import 'sklearn'" in line for line in skips)
    assert any("could not import 'matplotlib'" in line for line in skips)
    assert any("uses backend 'emulator', unavailable: no C++ compiler '/nonexistent'" in line for line in skips)
    assert " passed" in out and " error" not in out


def test_missing_nvtx_only_turns_ranges_off(monkeypatch):
    import numpy as np

    import pygpu_ops as po
    from pygpu_ops._runtime import nvtx

    monkeypatch.setitem(sys.modules, "nvtx", None)
    monkeypatch.setattr(nvtx, "_annotate", None)
    with nvtx.op_range("gemm", "numpy"):
        pass
    assert nvtx._annotate is False
    a = np.eye(3, dtype=np.float32)
    np.testing.assert_array_equal(po.gemm(a, a, backend="numpy"), a)
