"""Memory counters: what Nsight Compute's L1 counters would show, counted on the CPU.

Inside ``with count_memory() as rec:``, every emulator launch runs the
kernel's *counting twin*: the same module compiled with g++'s
``-fsanitize=thread`` instrumentation at the compile step only, whose hooks
(``__tsan_read4`` ...) live in the emulator runtime
(``csrc/pygpuemu_counters.inc``).  The hooks log each thread's global and
shared accesses with their site (the instruction that made them); when a
block has finished, each warp's logs are grouped into warp-level requests
and counted:

* global loads and stores: requests (one per warp-level instruction with at
  least one active lane) and sectors (distinct aligned 32-byte sectors the
  active lanes touch); Nsight Compute's
  ``l1tex__t_requests_pipe_lsu_mem_global_op_{ld,st}.sum`` and
  ``l1tex__t_sectors_pipe_lsu_mem_global_op_{ld,st}.sum``;
* shared loads and stores: requests and wavefronts, and bank conflicts as
  wavefronts minus the ideal (one wavefront per phase of the request).  The
  rules for 32-, 64- and 128-bit accesses are in the C++ file.

A warp-level request is the n-th execution of one access site by the lanes
of a warp: lanes that skip the access in a divergent branch are inactive in
it, and lanes that run a loop fewer times are inactive in its later
iterations, which is what SIMT execution does for structured control flow
after reconvergence.

Counting is off unless asked for: the normal modules carry no
instrumentation.  With ``sample_blocks=S`` a launch runs only S blocks spread
evenly over the grid (the first and the last included) and the counters are
extrapolated to the whole grid (``LaunchCounters.exact`` is False and the
blocks that did not run write nothing).

Limits (where the counts can differ from the GPU's):

* g++ compiles the kernel, not nvcc: an access the CUDA compiler would merge
  (two neighbouring 32-bit loads into one 64-bit load), keep in a register
  (a repeated load) or split, is counted as g++ emits it.  The counting build
  turns off the g++ passes that fuse or split accesses (SRA, vectorizers,
  store merging), so a ``float4`` load is one 16-byte access, as on the GPU.
  Code that g++ duplicates (loop peeling, jump threading) becomes two sites,
  which splits requests whose lanes take different copies.
* Accesses through ``cp.async`` (the plain twin copies through registers) are
  counted as a global load plus a shared store; atomics are not counted;
  texture, constant and local memory are not counted (locals live on the
  fiber's stack).
"""

import contextlib
import contextvars
import ctypes
import shutil
import subprocess
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

from . import _build

__all__ = ["count_memory", "Recording", "LaunchCounters", "SiteCounters", "TOTAL_KEYS"]

_EV_WRITE, _EV_SHARED = 1, 2

#: The keys of :meth:`LaunchCounters.totals`, in order.
TOTAL_KEYS = ("gld_requests", "gld_sectors", "gst_requests", "gst_sectors",
              "lds_requests", "lds_wavefronts", "sts_requests", "sts_wavefronts",
              "smem_bank_conflicts")

_current: contextvars.ContextVar = contextvars.ContextVar("pygpu_ops_emulator_counting",
                                                          default=None)


@dataclass(frozen=True)
class SiteCounters:
    """The counts of one access instruction (site) over one launch (blocks that ran only)."""
    offset: int            # address of the instruction in the counting module
    space: str             # "global" or "shared"
    op: str                # "load" or "store"
    width: int             # bytes per lane (4: 32-bit, 16: 128-bit)
    requests: int
    units: int             # sectors (global) or wavefronts (shared)
    ideal: int             # sectors if fully coalesced (global); phases (shared)
    lanes: int             # active lanes summed over the requests
    bytes: int
    source: Optional[Tuple[str, int]] = None  # (file, line) where the line table has it

    @property
    def key(self) -> str:
        """``gld``, ``gst``, ``lds`` or ``sts``: the prefix of this site's counts in the totals."""
        kind = "ld" if self.op == "load" else "st"
        return "g" + kind if self.space == "global" else kind + "s"


@dataclass
class LaunchCounters:
    """The memory counters of one launch."""
    kernel: str
    grid: Tuple[int, int, int]
    block: Tuple[int, int, int]
    dynamic_smem: int
    static_smem: int
    blocks_total: int
    blocks_run: int
    sites: List[SiteCounters] = field(default_factory=list)

    @property
    def exact(self) -> bool:
        """True when every block ran (no extrapolation)."""
        return self.blocks_run == self.blocks_total

    @property
    def scale(self) -> float:
        return self.blocks_total / self.blocks_run if self.blocks_run else 0.0

    def raw_totals(self) -> Dict[str, int]:
        """Counts over the blocks that ran, plus ``*_ideal`` and ``*_bytes`` per kind."""
        t = {k: 0 for k in TOTAL_KEYS}
        for s in self.sites:
            unit = "sectors" if s.space == "global" else "wavefronts"
            t[f"{s.key}_requests"] += s.requests
            t[f"{s.key}_{unit}"] += s.units
            t[f"{s.key}_ideal"] = t.get(f"{s.key}_ideal", 0) + s.ideal
            t[f"{s.key}_bytes"] = t.get(f"{s.key}_bytes", 0) + s.bytes
            if s.space == "shared":
                t["smem_bank_conflicts"] += s.units - s.ideal
        return t

    def totals(self) -> Dict[str, int]:
        """The counts of :data:`TOTAL_KEYS` for the whole grid (extrapolated from the blocks
        that ran when ``exact`` is False)."""
        raw = self.raw_totals()
        if self.exact:
            return {k: raw[k] for k in TOTAL_KEYS}
        return {k: int(round(raw[k] * self.scale)) for k in TOTAL_KEYS}

    def by_line(self) -> Dict[Tuple[str, int], Dict[str, int]]:
        """Counts over the blocks that ran, per source line (file, line) of the ``.cu`` code;
        sites the line table does not place are under ``("?", 0)``."""
        out: Dict[Tuple[str, int], Dict[str, int]] = {}
        for s in self.sites:
            d = out.setdefault(s.source or ("?", 0), {})
            unit = "sectors" if s.space == "global" else "wavefronts"
            for k, v in ((f"{s.key}_requests", s.requests), (f"{s.key}_{unit}", s.units)):
                d[k] = d.get(k, 0) + v
        return out


class Recording:
    """What :func:`count_memory` yields: ``launches`` gets one :class:`LaunchCounters` per
    emulator launch made inside the ``with`` block."""

    def __init__(self, sample_blocks: Optional[int]) -> None:
        self.sample_blocks = sample_blocks
        self.launches: List[LaunchCounters] = []

    def add(self, launch: LaunchCounters) -> None:
        self.launches.append(launch)


@contextlib.contextmanager
def count_memory(sample_blocks: Optional[int] = None):
    """Counts the memory accesses of every emulator launch inside the block.

    ``sample_blocks``: None runs every block (exact counts); an int S >= 1 runs at most S
    blocks per launch, spread over the grid, and extrapolates (results of the other blocks
    are not computed)."""
    if sample_blocks is not None:
        if isinstance(sample_blocks, bool) or not isinstance(sample_blocks, int) \
                or sample_blocks < 1:
            raise ValueError(f"sample_blocks must be None or an int >= 1, got {sample_blocks!r}")
    rec = Recording(sample_blocks)
    token = _current.set(rec)
    try:
        yield rec
    finally:
        _current.reset(token)


def current() -> Optional[Recording]:
    return _current.get()


def take(rt, kernel, grid, block, dynamic_smem) -> LaunchCounters:
    """The counters of the launch that just ended (called under the launch lock)."""
    run = ctypes.c_ulonglong()
    n = rt.pygpuemu_counters_take(None, 0, ctypes.byref(run))
    recs = (_build.SiteRecord * max(n, 1))()
    n = rt.pygpuemu_counters_take(recs, n, ctypes.byref(run))
    lines = _source_lines(str(kernel.module.path), tuple(recs[i].offset for i in range(n)))
    sites = [SiteCounters(offset=r.offset,
                          space="shared" if r.flags & _EV_SHARED else "global",
                          op="store" if r.flags & _EV_WRITE else "load",
                          width=r.size, requests=r.requests, units=r.units, ideal=r.ideal,
                          lanes=r.lanes, bytes=r.bytes, source=lines.get(r.offset))
             for r in recs[:n]]
    sites.sort(key=lambda s: (s.source or ("", 0), s.offset))
    total = grid[0] * grid[1] * grid[2]
    return LaunchCounters(kernel=kernel.name, grid=tuple(grid), block=tuple(block),
                          dynamic_smem=int(dynamic_smem), static_smem=kernel.shared_size_bytes,
                          blocks_total=total, blocks_run=int(run.value), sites=sites)


_line_cache: Dict[Tuple[str, int], Optional[Tuple[str, int]]] = {}


def _source_lines(path: str, offsets) -> Dict[int, Tuple[str, int]]:
    """(file, line) of each return address, from the module's line table (addr2line; the
    call's own address is one byte earlier)."""
    todo = sorted({o for o in offsets if (path, o) not in _line_cache})
    exe = shutil.which("addr2line")
    if todo and exe:
        out = subprocess.run([exe, "-e", path, *[hex(o - 1) for o in todo]],
                             capture_output=True, text=True)
        got = out.stdout.splitlines() if out.returncode == 0 else []
        for o, line in zip(todo, got + [""] * (len(todo) - len(got))):
            file, _, num = line.rpartition(":")
            num = num.split(" ")[0]
            file = file[2:] if file.startswith("./") else file
            _line_cache[(path, o)] = (file, int(num)) if num.isdigit() and int(num) else None
    return {o: _line_cache.get((path, o)) for o in offsets if _line_cache.get((path, o))}
