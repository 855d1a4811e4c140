"""The package's environment variables, read on every op call at the cost of a dict lookup.

``PYGPU_OPS_BACKEND``, ``PYGPU_OPS_NATIVE`` and ``PYGPU_OPS_NUM_THREADS`` are read on every call,
so that a test or a user can switch them at run time. ``os.environ.get`` of a variable that is
not set raises and catches a ``KeyError`` inside (``os._Environ`` defines only ``__getitem__``;
``Mapping.get`` wraps it): 0.9 us a call on the 2-core test machine, against 0.25 us for a set
variable and 0.03 us for a dict lookup. Unset is the usual case, and three such reads were a
visible part of a 40 us op.

`get` reads the dict that CPython's ``os.environ`` keeps its contents in (``os.environ._data``,
keyed and valued by ``os.environ.encodekey`` / ``encodevalue``: what ``os.environ[name]`` reads),
so it sees exactly what ``os.environ`` holds, changes made through it included. Where that dict
is not there (another Python implementation), it is ``os.environ.get``.
"""
from __future__ import annotations

import os
from typing import Optional

_env = os.environ
_data = getattr(_env, "_data", None)
_fast = isinstance(_data, dict) and hasattr(_env, "encodekey") and hasattr(_env, "decodevalue")


def get(name: str) -> Optional[str]:
    """``os.environ.get(name)``: the variable's value, or None when it is not set."""
    if _fast:
        raw = _data.get(_env.encodekey(name))
        return None if raw is None else _env.decodevalue(raw)
    return _env.get(name)
