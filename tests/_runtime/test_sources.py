"""Kernel sources: found in the tree, includes inlined with #line so diagnostics keep file/line."""
from __future__ import annotations

import pytest

from pygpu_ops._runtime import kernels, sources


def test_every_registered_kernel_has_its_source():
    for k in kernels.all_kernels():
        assert sources.source_path(k.source).is_file()
        assert k.symbol in sources.expand(k.source)


def test_expand_inlines_includes_with_line_directives(tmp_path, monkeypatch):
    (tmp_path / "common").mkdir()
    (tmp_path / "op").mkdir()
    (tmp_path / "common" / "h.cuh").write_text("#pragma once\nint helper();\n")
    (tmp_path / "op" / "k.cu").write_text('// one\n#include "../common/h.cuh"\n#include "../common/h.cuh"\nint k;\n')
    monkeypatch.setattr(sources, "cuda_src_dir", lambda: tmp_path)
    sources.expand.cache_clear()
    try:
        text = sources.expand("op/k.cu")
    finally:
        sources.expand.cache_clear()
    assert text.count("int helper();") == 1
    lines = text.splitlines()
    # "int k;" is line 4 of k.cu: the last #line directive before it must say so.
    idx = lines.index("int k;")
    directive = [l for l in lines[:idx] if l.startswith("#line")][-1]
    assert directive.split()[1] == str(4 - (idx - lines.index(directive) - 1))
    assert directive.endswith('k.cu"')


def test_missing_source_is_a_clear_error():
    with pytest.raises(FileNotFoundError, match="no_such.cu"):
        sources.source_path("sgemm/no_such.cu")
