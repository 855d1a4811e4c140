"""The cubin cache with a real CuPy's compiler (CuPy >= 13 and its NVRTC; no GPU needed: without
one, the two per-device arch helpers are pinned to sm_90). Checks that the CuPy internals the
cache uses exist and compile a package module into a cubin with mangled names, and that a second
load compiles nothing. Skipped where CuPy or its NVRTC cannot be loaded."""
from __future__ import annotations

import json

import pytest

from pygpu_ops._runtime import backends, cubin_cache, kernels, sources


@pytest.fixture
def real_cupy(monkeypatch, tmp_path):
    cupy = pytest.importorskip("cupy")
    from cupy.cuda import compiler

    try:
        compiler._get_nvrtc_version()
    except Exception as exc:
        pytest.skip(f"CuPy's NVRTC cannot be loaded: {exc}")
    if backends.problem("cuda") is not None:  # no GPU: pin what CuPy would read from the device
        monkeypatch.setattr(compiler, "_get_arch", lambda: "90")
        monkeypatch.setattr(compiler, "_get_arch_for_options_for_nvrtc",
                            lambda arch=None: (f"-arch=sm_{arch or '90'}", "cubin"))
    loads = []

    class Recorder:  # RawModule(path=) loads lazily; record what it was given
        def __init__(self, **kwargs):
            loads.append(kwargs)

    monkeypatch.setattr(cupy, "RawModule", Recorder)
    monkeypatch.setenv(cubin_cache.ENV, str(tmp_path))
    return cupy, compiler, loads


def test_real_cupy_compiles_into_the_cache_once(real_cupy, monkeypatch):
    cupy, compiler, loads = real_cupy
    kernels.all_kernels()
    k = next(k for k in kernels.REGISTRY.values() if k.source == "sgemm/01_naive.cu")
    names = kernels.module_name_expressions(k)
    args = (sources.expand(k.source), k.options(), names, k.source)
    mod = cubin_cache.load_module(cupy, *args)
    assert isinstance(mod, cubin_cache.CachedModule) and loads[-1] == {"path": str(mod.path)}
    meta = json.loads(mod.path.with_suffix(".json").read_text())
    assert all(meta["names"][n].startswith("_Z") for n in names)
    assert "-ftz=true" in meta["options"] and meta["nvrtc"] == list(compiler._get_nvrtc_version())
    binary = mod.path.read_bytes()
    assert binary[:4] == b"\x7fELF" if mod.path.suffix == ".cubin" else b".version" in binary

    def no_compile(*a, **kw):
        raise AssertionError("compiled although the cache holds the module")

    monkeypatch.setattr(compiler, "compile_using_nvrtc", no_compile)
    cubin_cache._toolchains.clear()
    again = cubin_cache.load_module(cupy, *args)
    assert again.path == mod.path and again.names == mod.names
