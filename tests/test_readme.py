"""The README's Python examples run as written, one test per block, each after the blocks before it
(they share names). A block that uses a backend missing here (the emulator without g++, cuda
without a GPU) skips, saying why; in the blocks before it, a bare expression statement that uses
such a backend (it binds no name) is left out, so the blocks after it still run."""
from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from pygpu_ops._runtime import backends

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def needs(code: str) -> set:
    """The backends a piece of README code uses."""
    found = set()
    if re.search(r"""["']emulator["']""", code):
        found.add("emulator")
    if re.search(r"\bcupy\b|\bcp\.", code):
        found.add("cuda")
    return found


def missing(code: str) -> dict:
    return {name: backends.problem(name) for name in sorted(needs(code)) if backends.problem(name)}


def runnable_part(code: str):
    """What of an earlier block runs here, as a code object: all of it, or without its bare
    expression statements that use a missing backend; nothing of a block on GPU arrays without a
    GPU (only GPU blocks can use its names, and they skip); None when a statement that binds
    names (an import, an assignment) needs the emulator and it is missing."""
    if "cuda" in missing(code):
        return compile("", str(README), "exec")
    lines = code.splitlines()
    kept = []
    for node in ast.parse(code).body:
        if missing("\n".join(lines[node.lineno - 1:node.end_lineno])):
            if not isinstance(node, ast.Expr):
                return None
            continue
        kept.append(node)
    return compile(ast.Module(body=kept, type_ignores=[]), str(README), "exec")


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def _param(i, code):
    return pytest.param(i, id=f"block{i}", marks=[pytest.mark.gpu] if "cuda" in needs(code) else [])


@pytest.mark.parametrize("index", [_param(i, code) for i, code in enumerate(BLOCKS)])
def test_readme_block_runs(index):
    why = missing(BLOCKS[index])
    if why:
        pytest.skip(f"README python block {index} uses " + "; ".join(f"backend {n!r}, unavailable: {w}"
                                                                      for n, w in why.items()))
    ns: dict = {}
    for j in range(index):
        part = runnable_part(BLOCKS[j])
        if part is None:
            pytest.skip(f"README python block {index} needs names that block {j} defines with "
                        f"backend(s) {sorted(missing(BLOCKS[j]))} (unavailable here)")
        exec(part, ns)
    exec(compile(BLOCKS[index], str(README), "exec"), ns)


def test_runnable_part_without_the_emulator(monkeypatch):
    monkeypatch.setitem(backends._problems, "emulator", "no C++ compiler '/nonexistent' on the PATH")
    monkeypatch.setitem(backends._problems, "cuda", "no CUDA device is present")
    ns: dict = {}
    exec(runnable_part('import numpy as np\nx = np.ones(3)\nnp.abs(x, backend="emulator")\ny = x + 1\n'), ns)
    assert set(ns) >= {"np", "x", "y"}
    assert runnable_part('import numpy as np\ny = np.abs(np.ones(3), backend="emulator")\n') is None
    ns = {}
    exec(runnable_part("import cupy as cp\nz = cp.ones(3)\n"), ns)
    assert "z" not in ns and "cp" not in ns


def test_onnx_op_list_is_the_handler_table():
    """The README's list of ONNX ops is the IR's handler table, not typed separately."""
    from pygpu_ops.ir import ops

    text = README.read_text().split("<!-- onnx-ops -->", 1)[1].split("\n\n", 1)[0]
    listed = [re.sub(r"\s*\(.*\)", "", t).strip() for t in text.replace("\n", " ").rstrip(".").split(",")]
    assert listed == [name for name, _ in ops.supported_ops()]
