"""The README's Python examples run as written (the GPU ones where a GPU is present)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from pygpu_ops._runtime import backends

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCKS = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)


def test_readme_has_examples():
    assert len(BLOCKS) >= 3


def test_readme_examples_run():
    ns: dict = {}
    for code in BLOCKS:
        if "cupy" in code:
            continue
        if "backend=\"emulator\"" in code and backends.problem("emulator"):
            pytest.skip(f"emulator unavailable: {backends.problem('emulator')}")
        exec(compile(code, str(README), "exec"), ns)


@pytest.mark.gpu
def test_readme_gpu_examples_run():
    if backends.problem("cuda"):
        pytest.skip(f"backend 'cuda' unavailable: {backends.problem('cuda')}")
    ns: dict = {}
    for code in BLOCKS:
        exec(compile(code, str(README), "exec"), ns)
