"""The cubin cache (pygpu_ops/_runtime/cubin_cache.py), through the fake CuPy: its fake NVRTC
(cupy.cuda.compiler.compile_using_nvrtc) writes a small "cubin" that the fake
RawModule(path=...) loads back, exposing kernels under their lowered names only.

A first process compiles and writes; a second (a fresh Device, or a subprocess) compiles nothing
and loads from the file; a changed source, option, architecture, NVRTC or CuPy version misses;
a damaged entry is compiled again, never a crash."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest

import pygpu_ops as po
from pygpu_ops import linalg
from pygpu_ops._runtime import cubin_cache, device, sources
from pygpu_ops._runtime.kernels import module_name_expressions

ROOT = Path(__file__).resolve().parents[2]
NAIVE = linalg.SGEMM_LADDER[0].kernel


@pytest.fixture
def cupy(fake_cupy, tmp_path, monkeypatch):
    monkeypatch.setenv(cubin_cache.ENV, str(tmp_path / "cubin"))
    return fake_cupy


def _gemm(cupy):
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    b = np.linspace(-1, 1, 15, dtype=np.float32).reshape(3, 5)
    y = po.gemm(cupy.asarray(a), cupy.asarray(b), variant="naive")
    np.testing.assert_allclose(y.get(), a.astype(np.float64) @ b, rtol=1e-6, atol=1e-6)


def _fresh_process(cupy):
    """What a new process has: no Device, so no memoized module or function."""
    device.get_device.cache_clear()
    cupy._state["nvrtc_compiles"].clear()
    cupy._state["path_loads"].clear()
    cupy._state["code_modules"].clear()


def _entries(d: Path):
    return sorted(p.name for p in d.iterdir())


def _load(cupy, code=None, options=None, names=None):
    code = sources.expand(NAIVE.source) if code is None else code
    options = NAIVE.options() if options is None else options
    names = module_name_expressions(NAIVE) if names is None else names
    return cubin_cache.load_module(cupy, code, tuple(options), tuple(names), NAIVE.source)


def test_first_process_compiles_and_writes_the_cubin_and_the_lowered_names(cupy):
    _gemm(cupy)
    compiles = cupy._state["nvrtc_compiles"]
    assert len(compiles) == 1
    opts, names = compiles[0]
    assert "sgemm_naive<32, 32>" in names
    # CuPy's own option assembly, -ftz=true as RawModule adds it, then the arch NVRTC chose.
    assert opts == cupy._core.core.assemble_cupy_compiler_options(NAIVE.options()) + (
        "-ftz=true", "-arch=sm_90", "--device-as-default-execution-space")
    d = cubin_cache.cache_dir()
    files = _entries(d)
    assert len(files) == 2 and files[0].endswith(".cubin") and files[1].endswith(".json")
    meta = json.loads((d / files[1]).read_text())
    from fake_cupy import lowered_name

    assert meta["names"]["sgemm_naive<32, 32>"] == lowered_name("sgemm_naive<32, 32>")
    assert meta["binary"] == files[0] and meta["nvrtc"] == [12, 9] and meta["arch"] == "90"
    # The module was loaded from the file it wrote, by lowered name.
    assert cupy._state["path_loads"] == [str(d / files[0])] and cupy._state["code_modules"] == []


def test_second_process_loads_and_compiles_nothing(cupy):
    _gemm(cupy)
    _fresh_process(cupy)
    _gemm(cupy)
    assert cupy._state["nvrtc_compiles"] == []
    assert cupy._state["code_modules"] == []
    assert len(cupy._state["path_loads"]) == 1 and cupy._state["path_loads"][0].endswith(".cubin")


def test_a_subprocess_reuses_the_cache(cupy, tmp_path):
    _gemm(cupy)
    script = f"""
import json, sys
sys.path.insert(0, {str(ROOT / 'tests' / '_runtime')!r})
import numpy as np
import fake_cupy
cupy = fake_cupy.make()
sys.modules["cupy"] = cupy
import pygpu_ops as po
a = np.arange(12, dtype=np.float32).reshape(4, 3)
y = po.gemm(cupy.asarray(a), cupy.asarray(a.T.copy()), variant="naive")
assert np.allclose(y.get(), a.astype(np.float64) @ a.T)
print(json.dumps({{"compiles": len(cupy._state["nvrtc_compiles"]), "loads": cupy._state["path_loads"]}}))
"""
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["compiles"] == 0
    assert got["loads"] == [str(cubin_cache.cache_dir() / _entries(cubin_cache.cache_dir())[0])]


@pytest.mark.parametrize("change", ["source", "options", "names", "arch", "nvrtc", "cupy"])
def test_a_change_of_anything_compiled_misses(cupy, change):
    _load(cupy)
    assert len(cupy._state["nvrtc_compiles"]) == 1
    _load(cupy)
    assert len(cupy._state["nvrtc_compiles"]) == 1  # same everything: a hit
    code, options, names = None, None, None
    if change == "source":
        code = sources.expand(NAIVE.source) + "\n// changed\n"
    elif change == "options":
        options = NAIVE.options(("-lineinfo",))
    elif change == "names":
        names = module_name_expressions(NAIVE)[:1] + ("sgemm_naive<16, 16>",)
    elif change == "arch":
        cupy._state["arch"] = "80"
    elif change == "nvrtc":
        cupy._state["nvrtc"] = (13, 0)
    elif change == "cupy":
        cupy.__version__ = "fake-2"
    _load(cupy, code, options, names)
    assert len(cupy._state["nvrtc_compiles"]) == 2
    assert len(_entries(cubin_cache.cache_dir())) == 4
    if change == "arch":
        assert "-arch=sm_80" in cupy._state["nvrtc_compiles"][1][0]


def _damage(kind, d: Path):
    cubin = next(d.glob("*.cubin"))
    meta = next(d.glob("*.json"))
    if kind == "truncated cubin":
        cubin.write_bytes(cubin.read_bytes()[:50])
    elif kind == "empty cubin":
        cubin.write_bytes(b"")
    elif kind == "flipped byte":
        data = bytearray(cubin.read_bytes())
        data[len(data) // 2] ^= 0x20
        cubin.write_bytes(bytes(data))
    elif kind == "missing cubin":
        cubin.unlink()
    elif kind == "truncated json":
        meta.write_text(meta.read_text()[:40])
    elif kind == "json without the name":
        m = json.loads(meta.read_text())
        m["names"].pop("sgemm_naive<32, 32>")
        meta.write_text(json.dumps(m))
    elif kind == "json of another shape":
        meta.write_text("[1, 2, 3]")


@pytest.mark.parametrize("kind", ["truncated cubin", "empty cubin", "flipped byte", "missing cubin",
                                  "truncated json", "json without the name", "json of another shape"])
def test_a_damaged_entry_is_compiled_again(cupy, kind):
    _gemm(cupy)
    d = cubin_cache.cache_dir()
    good = {p.name: p.read_bytes() for p in d.iterdir()}
    _damage(kind, d)
    _fresh_process(cupy)
    rejected = cubin_cache.stats["rejected"]
    _gemm(cupy)  # correct result from a recompiled module
    assert len(cupy._state["nvrtc_compiles"]) == 1
    assert cubin_cache.stats["rejected"] == rejected + 1
    # The entry is whole again, byte for byte what the first compile wrote.
    assert {p.name: p.read_bytes() for p in d.iterdir()} == good
    _fresh_process(cupy)
    _gemm(cupy)
    assert cupy._state["nvrtc_compiles"] == []


def test_writes_leave_no_temporary_files(cupy):
    _load(cupy)
    _load(cupy, options=NAIVE.options(("-lineinfo",)))
    names = _entries(cubin_cache.cache_dir())
    assert len(names) == 4 and all(n.endswith((".cubin", ".json")) for n in names)


def test_unwritable_cache_warns_and_compiles_from_source(cupy, monkeypatch):
    def refuse(path, data):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(cubin_cache, "_write_atomic", refuse)
    monkeypatch.setattr(cubin_cache, "_warned", False)
    with pytest.warns(RuntimeWarning, match="cannot write the kernel cache"):
        _gemm(cupy)
    assert cupy._state["code_modules"] and cupy._state["path_loads"] == []


def test_turned_off_it_is_plain_rawmodule(cupy, monkeypatch):
    monkeypatch.setenv(cubin_cache.ENV, "0")
    assert cubin_cache.cache_dir() is None
    _gemm(cupy)
    assert cupy._state["nvrtc_compiles"] == [] and cupy._state["path_loads"] == []
    assert any("sgemm_naive<32, 32>" in names for names in cupy._state["code_modules"])
    assert "off" in cubin_cache.describe()


def test_a_cupy_without_the_internals_warns_once_and_compiles_from_source(cupy, monkeypatch):
    del cupy.cuda.compiler.compile_using_nvrtc
    monkeypatch.setattr(cubin_cache, "_warned", False)
    with pytest.warns(RuntimeWarning, match="kernel cache is off.*compile_using_nvrtc"):
        _gemm(cupy)
    assert any("sgemm_naive<32, 32>" in names for names in cupy._state["code_modules"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        po.relu(cupy.asarray(np.ones(3, np.float32)))  # another module: no second warning
    assert cupy._state["nvrtc_compiles"] == []


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv(cubin_cache.ENV, raising=False)
    monkeypatch.setenv("PYGPU_OPS_CACHE_DIR", str(tmp_path / "base"))
    assert cubin_cache.cache_dir() == tmp_path / "base" / "cubin"
    monkeypatch.delenv("PYGPU_OPS_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert cubin_cache.cache_dir() == tmp_path / "xdg" / "pygpu_ops" / "cubin"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert cubin_cache.cache_dir(create=False) == tmp_path / "home" / ".cache" / "pygpu_ops" / "cubin"
    monkeypatch.setenv(cubin_cache.ENV, str(tmp_path / "mine"))
    assert cubin_cache.cache_dir() == tmp_path / "mine"
    for off in ("0", "off", "OFF", "false", "no"):
        monkeypatch.setenv(cubin_cache.ENV, off)
        assert cubin_cache.cache_dir() is None


def test_clear_removes_the_entries(cupy):
    _load(cupy)
    d = cubin_cache.cache_dir()
    (d / "unrelated.txt").write_text("kept")
    assert cubin_cache.clear() == 2
    assert _entries(d) == ["unrelated.txt"]
    _fresh_process(cupy)
    _load(cupy)
    assert len(cupy._state["nvrtc_compiles"]) == 1


def test_info_shows_where_the_cache_is(cupy, capsys):
    from pygpu_ops import cli

    _load(cupy)
    assert cli.main(["info"]) == 0
    out = capsys.readouterr().out
    line = next(l for l in out.splitlines() if l.startswith("kernel cache"))
    assert str(cubin_cache.cache_dir()) in line and "1 modules" in line and "rm -r" in line


def test_a_cubin_the_driver_refuses_is_compiled_from_source_and_dropped(cupy, monkeypatch):
    """CuPy loads a RawModule(path=...) at its first get_function: a CUDADriverError there (an
    image this driver cannot load) must not stop the run. The module is compiled from source,
    with one warning, and the entry removed, so the next process writes a fresh one."""
    _gemm(cupy)                                    # writes the entry
    d = cubin_cache.cache_dir()
    _fresh_process(cupy)

    class CUDADriverError(RuntimeError):
        pass

    real = cupy.RawModule

    def refusing(*args, path=None, **kwargs):
        mod = real(*args, path=path, **kwargs)
        if path is not None:
            def get_function(name):
                raise CUDADriverError("CUDA_ERROR_UNSUPPORTED_PTX_VERSION: the provided PTX was compiled with an "
                                      "unsupported toolchain.")
            mod.get_function = get_function
        return mod

    monkeypatch.setattr(cupy, "RawModule", refusing)
    monkeypatch.setattr(cubin_cache, "_warned", False)
    with pytest.warns(RuntimeWarning, match="driver refused the cached kernels.*compiling them from source"):
        _gemm(cupy)
    assert any("sgemm_naive<32, 32>" in names for names in cupy._state["code_modules"])
    assert not [p for p in _entries(d) if p.endswith((".cubin", ".ptx"))]   # dropped: rebuilt next time
    _fresh_process(cupy)
    monkeypatch.setattr(cupy, "RawModule", real)
    _gemm(cupy)
    assert len(cupy._state["nvrtc_compiles"]) == 1 and cupy._state["path_loads"]


def test_other_errors_of_a_cached_module_are_not_hidden(cupy):
    mod = _load(cupy)
    with pytest.raises(KeyError, match="no kernel"):
        mod.get_function("no_such_kernel")
