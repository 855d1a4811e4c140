"""Test helpers for code that runs kernels on the emulator."""

import numpy as np

__all__ = ["run_under_seeds"]


def _as_tuple(r):
    if isinstance(r, (tuple, list)):
        return tuple(r)
    return (r,)


def run_under_seeds(fn, seeds=(1, 2)):
    """Calls ``fn()`` (which launches kernels and returns an array or a tuple
    of arrays) once under each scheduling seed and raises ``AssertionError``
    unless all results are bit-identical (NaNs compare by their bytes).  A
    difference means the result depends on the order in which the threads of
    a block run: a race on shared memory (missing ``__syncthreads``), a read of
    uninitialized memory, or order-dependent atomics.  Returns the result of
    the first seed."""
    from ._module import seed as _seed

    seeds = tuple(seeds)
    if not seeds:
        raise ValueError("run_under_seeds needs at least one seed")
    results = []
    for s in seeds:
        with _seed(s):
            r = _as_tuple(fn())
        results.append(tuple(np.array(x, copy=True) for x in r))
    ref, s0 = results[0], seeds[0]
    for s, res in zip(seeds[1:], results[1:]):
        if len(res) != len(ref):
            raise AssertionError(f"seeds {s0} and {s}: fn() returned {len(ref)} vs {len(res)} "
                                 "results")
        for k, (a, b) in enumerate(zip(ref, res)):
            if a.shape != b.shape or a.dtype != b.dtype:
                raise AssertionError(f"seeds {s0} and {s}: output {k} has shape/dtype "
                                     f"{a.shape}/{a.dtype} vs {b.shape}/{b.dtype}")
            if a.tobytes() == b.tobytes():
                continue
            ab = np.ascontiguousarray(a).reshape(-1).view(np.uint8).reshape(a.size, -1) \
                if a.size else a
            bb = np.ascontiguousarray(b).reshape(-1).view(np.uint8).reshape(b.size, -1) \
                if b.size else b
            diff = np.nonzero((ab != bb).any(axis=1))[0]
            first = int(diff[0])
            idx = np.unravel_index(first, a.shape) if a.ndim else ()
            idx = tuple(int(i) for i in idx)
            raise AssertionError(
                f"results differ between seeds {s0} and {s}: output {k} first differs at index "
                f"{idx}: {a[idx]!r} vs {b[idx]!r} ({diff.size} of {a.size} elements differ). "
                "The result depends on the order in which threads run: a race on shared "
                "memory (missing __syncthreads?), a read of uninitialized memory, or "
                "order-dependent atomics.")
    return results[0] if len(results[0]) > 1 else results[0][0]
