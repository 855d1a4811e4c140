"""A small persistent thread pool for the NumPy fallback: independent chunks of one op (row blocks
of a softmax, slabs of an elementwise op, images of an im2col) run on all the cores this process
may use.

How it works: NumPy releases the GIL inside its ufunc loops, copies and reductions, so several
Python threads each calling NumPy on its own slice of the data run in parallel; only the Python
glue between calls is serialized. ``parallel_for(n, fn)`` calls ``fn(0) ... fn(n - 1)``: the caller
takes a share itself and up to ``threads - 1`` pool workers take the rest, each pulling the next
index from a shared counter (so uneven chunks balance). It returns when every chunk is done; it
does not wait for a worker that has not started (on a loaded machine the caller then runs all
the chunks itself rather than sleep until the scheduler wakes the worker).

Size: ``len(os.sched_getaffinity(0))`` (the CPUs this process may run on, which respects
``taskset`` and container cpusets, unlike ``os.cpu_count``; read once per process), or
``PYGPU_OPS_NUM_THREADS`` (a positive int) when set. The variable is read on every call, so a
test or a user can change it at run time; the pool is rebuilt when the size changes. With one
thread ``parallel_for`` is a plain loop in the caller: exactly the single-threaded path, no pool,
no thread ever started.

Limits:
- A chunk must be independent of the others (disjoint output slices); no ordering is promised.
- The first exception a chunk raises is re-raised in the caller once the running chunks end; the
  chunks not yet started are skipped.
- A ``parallel_for`` inside a chunk runs inline (no nested fan-out, which could deadlock a pool
  whose workers all wait on each other).
- It does not manage BLAS's own threads: a chunk that calls ``numpy.matmul`` on a large matrix
  oversubscribes the cores. Parallelize the copies around a BLAS call, not the call itself.
- Chunks run in a copy of the caller's ``contextvars`` context, so ``numpy.errstate`` set by
  the caller holds in every chunk.
- The pool starts lazily (importing the package starts no thread); after ``fork`` the child
  builds its own.
"""
from __future__ import annotations

import contextvars
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Callable, List, Optional, Tuple

from . import envvars

ENV_VAR = "PYGPU_OPS_NUM_THREADS"

_lock = threading.Lock()
_default_threads: Optional[int] = None
_executor: Optional[ThreadPoolExecutor] = None
_executor_size = 0


class _Local(threading.local):
    inside = False      # this thread is running a chunk (the class default: no AttributeError
                        # raised and caught per call in the threads that never ran one)


_local = _Local()


def default_threads() -> int:
    """The CPUs this process may run on (``os.sched_getaffinity``; ``os.cpu_count`` where the
    platform has no affinity call), read once per process and again in a fork child, as
    PyTorch and OpenBLAS size their pools once: the system call on every op was ~0.5 us on the
    2-core test VM, a tenth of a small op's Python side."""
    global _default_threads
    if _default_threads is None:
        try:
            n = len(os.sched_getaffinity(0))
        except AttributeError:      # macOS, Windows
            n = os.cpu_count() or 1
        _default_threads = max(1, n)
    return _default_threads


def num_threads() -> int:
    """The pool size: ``PYGPU_OPS_NUM_THREADS`` when set (a positive int), else `default_threads`."""
    raw = envvars.get(ENV_VAR)
    if raw is None or raw.strip() == "":
        return default_threads()
    try:
        n = int(raw.strip(), 10)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"{ENV_VAR} must be a positive integer (the thread count of the NumPy "
                         f"fallback); got {raw!r}")
    return n


def inside_chunk() -> bool:
    """Whether the calling thread is running a chunk of `parallel_for`."""
    return _local.inside


def _get_executor(workers: int) -> ThreadPoolExecutor:
    global _executor, _executor_size
    with _lock:
        if _executor is None or _executor_size < workers:   # grow only: no rebuild per call
            old = _executor
            _executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pygpu_ops")
            _executor_size = workers
            if old is not None:
                old.shutdown(wait=False)
        return _executor


def _after_fork() -> None:
    # the child has none of the parent's worker threads: forget the executor, build one on demand
    global _executor, _executor_size, _lock, _default_threads
    _executor, _executor_size, _lock, _default_threads = None, 0, threading.Lock(), None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork)


def parallel_for(n_chunks: int, fn: Callable[[int], object], threads: Optional[int] = None) -> None:
    """``fn(i)`` for every i in ``range(n_chunks)``, spread over ``threads`` threads (the caller is
    one of them; default `num_threads`). Returns when all are done; re-raises the first error."""
    n_chunks = int(n_chunks)
    if n_chunks <= 0:
        return
    t = num_threads() if threads is None else int(threads)
    if t < 1:
        raise ValueError(f"parallel_for: threads must be a positive int; got {threads!r}")
    t = min(t, n_chunks)
    if t == 1 or _local.inside:
        for i in range(n_chunks):
            fn(i)
        return
    # ``busy`` counts chunks running; the caller, once no index is left, waits for those only.
    # A worker that the OS has not scheduled yet is not waited for: when it runs it finds no index
    # and returns. On a loaded machine the caller so does the work alone instead of sleeping a
    # scheduler time slice for an idle worker to wake up.
    state = {"next": 0, "error": None, "busy": 0}
    cond = threading.Condition()

    def runner() -> None:
        _local.inside = True
        try:
            while True:
                with cond:
                    if state["error"] is not None or state["next"] >= n_chunks:
                        return
                    i = state["next"]
                    state["next"] = i + 1
                    state["busy"] += 1
                try:
                    fn(i)
                except BaseException as exc:
                    with cond:
                        if state["error"] is None:
                            state["error"] = exc
                    return
                finally:
                    with cond:
                        state["busy"] -= 1
                        cond.notify_all()
        finally:
            _local.inside = False

    # Each worker runs in a copy of the caller's context: NumPy 2 keeps ``errstate`` in a
    # context variable, which a thread would otherwise not see (one copy per thread: a context
    # cannot be entered by two threads at once).
    ctx = contextvars.copy_context()
    pool = _get_executor(t - 1)
    for _ in range(t - 1):
        pool.submit(ctx.copy().run, runner)
    runner()                    # the caller's share: it runs until no index is left
    with cond:
        cond.wait_for(lambda: state["busy"] == 0)
    if state["error"] is not None:
        raise state["error"]


def split(total: int, min_chunk: int, threads: Optional[int] = None, per_thread: int = 1) -> List[Tuple[int, int]]:
    """``[(start, stop), ...]`` covering ``range(total)`` in contiguous, near-equal pieces of at
    least ``min_chunk`` items (the whole range in one piece when it is smaller than two), at most
    ``per_thread`` pieces per thread: the chunking for `parallel_for`. ``min_chunk`` keeps a piece
    large enough that the work outweighs handing it to a thread (tens of microseconds)."""
    total = int(total)
    if total <= 0:
        return []
    t = num_threads() if threads is None else int(threads)
    pieces = max(1, min(t * per_thread, total // max(1, int(min_chunk))))
    step, extra = divmod(total, pieces)
    out, start = [], 0
    for k in range(pieces):
        stop = start + step + (1 if k < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def map_ranges(ranges: List[Tuple[int, int]], fn: Callable[[int, int], object]) -> None:
    """``fn(start, stop)`` for each range of `split`, on the pool."""
    parallel_for(len(ranges), lambda i: fn(*ranges[i]))
