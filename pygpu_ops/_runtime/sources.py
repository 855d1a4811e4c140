"""Finding the `.cu` files and turning one into the text every compiler sees.

The kernels live in the top-level ``cuda_src/`` of the source tree; the wheel carries the same
folder as ``pygpu_ops/cuda_src/``. `expand` inlines the project's own quoted ``#include``s with
``#line`` directives, so that (a) CuPy's disk cache, NVRTC and the emulator all key on the full
text (CuPy's cache does not look at files pulled in with ``-I``), and (b) every diagnostic still
names the original file and line.
"""
from __future__ import annotations

import functools
import re
from pathlib import Path

_INCLUDE = re.compile(r'^[ \t]*#[ \t]*include[ \t]+"([^"]+)"[ \t]*(?://.*)?$', re.MULTILINE)
_PRAGMA_ONCE = re.compile(r"^[ \t]*#[ \t]*pragma[ \t]+once[ \t]*$", re.MULTILINE)


@functools.lru_cache(maxsize=None)
def src_dir(name: str = "cuda_src") -> Path:
    """A folder of sources shipped with the package, ``cuda_src`` (the kernels) or ``cpu_src`` (the
    numpy backend's native loops): inside the installed package, else the source tree's."""
    here = Path(__file__).resolve().parent.parent  # .../pygpu_ops
    for candidate in (here / name, here.parent / name):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        f"pygpu_ops: cannot find {name}/: neither {here / name} (installed wheel) "
        f"nor {here.parent / name} (source tree) exists; reinstall the package"
    )


def cuda_src_dir() -> Path:
    """The folder holding the kernels."""
    return src_dir("cuda_src")


def source_path(relative: str) -> Path:
    path = cuda_src_dir() / relative
    if not path.is_file():
        raise FileNotFoundError(f"pygpu_ops: kernel source {relative!r} not found under {cuda_src_dir()}")
    return path


@functools.lru_cache(maxsize=None)
def expand(relative: str) -> str:
    """Text of ``cuda_src/<relative>`` with its quoted includes inlined, line numbers kept."""
    return _expand(source_path(relative), set())


def expand_files(paths) -> str:
    """The texts of several files, each with its quoted includes inlined, as one translation unit
    (a ``#pragma once`` header is inlined once)."""
    seen: set = set()
    return "\n".join(_expand(Path(p), seen) for p in paths)


def _expand(path: Path, seen: set) -> str:
    text = path.read_text()
    once = bool(_PRAGMA_ONCE.search(text))
    if once:
        if path in seen:
            return ""
        seen.add(path)
        text = _PRAGMA_ONCE.sub("", text)
    out = [f'#line 1 "{path}"\n']
    pos = 0
    for m in _INCLUDE.finditer(text):
        out.append(text[pos:m.start()])
        inc = (path.parent / m.group(1)).resolve()
        if not inc.is_file():
            raise FileNotFoundError(f'{path}: #include "{m.group(1)}" not found ({inc})')
        out.append(_expand(inc, seen))
        line = text.count("\n", 0, m.end()) + 2  # the line after the #include
        out.append(f'\n#line {line} "{path}"')
        pos = m.end()
    out.append(text[pos:])
    return "".join(out)
