"""CPU emulator for the package's hand-written CUDA kernels.

It runs the *unchanged* ``.cu`` source on the CPU and stands in for
``cupy.RawModule``, so that op code computes grids, shared memory and
arguments exactly as it does for the GPU.

How it works
------------
The source is compiled by g++ as C++17 after a prelude header
(``csrc/pygpuemu_prelude.h``) that defines the CUDA language: ``__global__``
and friends, ``threadIdx``/``blockIdx``/``blockDim``/``gridDim``, vector types,
``__syncthreads``, warp collectives, atomics and the device math library.
A generated glue section records each kernel's C signature (so arguments can
be type-checked) and a trampoline that unpacks the argument array.  Modules
are cached on disk (``$PYGPU_OPS_CACHE_DIR/emulator``, else
``$XDG_CACHE_HOME/pygpu_ops/emulator`` or ``~/.cache/pygpu_ops/emulator``) and
in-process.

A launch runs the blocks one after another on the calling OS thread, in a
pseudo-random order.  Every thread of a block is a fiber (hand-written x86-64
context switch, ``ucontext`` elsewhere; 128 KiB stack each) that runs until it
blocks at ``__syncthreads``, a warp collective or ``__nanosleep``, or
finishes; the next runnable fiber is picked at random.  Both orders come from
the seed (``set_seed``, ``seed()``, env ``PYGPU_OPS_EMU_SEED``; default 0, so
runs are reproducible).  ``set_timeout(seconds)`` (env
``PYGPU_OPS_EMU_TIMEOUT``; default: none) turns a launch that hangs, or ends
after the deadline, into a ``KernelError``, on whichever Python thread
launches: a POSIX timer signals the launching OS thread, whose signal stays
blocked until the launch's jump buffer is set and is blocked again before the
launch ends; the handler jumps out only from code of the kernel's module or of
the runtime (from inside libc, e.g. ``printf`` holding the stdout lock, it
looks again 0.1 ms later).

Public interface: ``RawModule``, ``RawKernel``, ``Function`` (as in CuPy),
``empty``, ``zeros``, ``to_device``, ``is_device_array``, ``set_seed`` /
``get_seed`` / ``seed``, ``set_timeout`` / ``get_timeout``,
``testing.run_under_seeds``, ``cache_dir()``, and the exception classes
below.  The C++ compiler is ``$PYGPU_OPS_EMU_CXX``, else ``$CXX``, else g++.

What it checks (each error names the kernel, block and thread)
-------------------------------------------------------------
* ``DeadlockError``: a thread exits while others wait at ``__syncthreads``
  (early ``return`` before a barrier); a warp collective whose mask names a
  lane that exited or waits elsewhere (e.g. a full-mask shuffle in divergent
  code); lanes reaching different collectives; a shuffle reading a lane that
  is not in its mask.
* Races on shared memory: the thread order (and block order) differs between
  seeds; :func:`testing.run_under_seeds` runs a computation under several
  seeds and requires bit-identical results.
* ``OutOfBoundsError``: device buffers (:func:`empty`, :func:`to_device`) sit
  between PROT_NONE guard pages, so accesses just past the end (or before the
  start) fault and are reported with the buffer and the offset; the few
  slack bytes between data and guard page carry a canary that is checked
  after every launch (reported without a thread).  Accesses beyond the
  launch's dynamic shared memory (rounded up to 4 KiB pages) fault too.  A
  fault never crashes Python.
* Uninitialized memory: static and dynamic shared memory are filled with
  0xFF bytes before every block, new device buffers too (NaN for
  float/double), so reads of unwritten data show up as NaN.
* Argument checking (``TypeError``): count, numpy scalar types that match the
  C parameter exactly, device arrays whose dtype matches the pointee.
* ``LaunchError``: more than 1024 threads (or the ``__launch_bounds__``
  value), block/grid dimension limits, and CUDA's shared memory rule: a
  block may use 48 KiB of shared memory, static and dynamic together, so
  ``max_dynamic_shared_size_bytes`` is by default 48 KiB minus the kernel's
  static shared memory (as CUDA reports it) and a launch with more dynamic
  shared memory fails (on a GPU: CUDA_ERROR_INVALID_VALUE) until the kernel
  opts in by raising it; raising it beyond 227 KiB (sm_90's opt-in limit per
  block) minus the static part fails, as cuFuncSetAttribute does.
* ``CompileError`` for a kernel that declares more than 48 KiB of static
  shared memory (ptxas: "uses too much shared data").
* ``KernelError``: device ``assert``, ``__trap()``, integer division by
  zero, stack overflow (128 KiB per thread), timeout.

Static shared memory (``Function.shared_size_bytes``,
``attributes['shared_size_bytes']``) is measured per kernel: ``__shared__``
variables are thread-local (TLS) variables of the g++-compiled module, which
is compiled with ``-ffunction-sections -fdata-sections`` to an object file
first.  The relocations of each function's text section name the TLS
variables its code uses and the functions it calls; a kernel's static shared
memory is every variable reachable from it (its own, those of ``__device__``
helpers inlined into it or called by it, file-scope ``__shared__`` variables
it uses), each at its alignment (its ``.tbss`` section's), the most aligned
first.  The result is stored next to the library (``mod-<hash>.json``) and
matches ptxas's per-kernel smem for every registered kernel
(``tests/_runtime/test_shared_memory.py``).

Memory counters (``count_memory``)
----------------------------------
``with count_memory(sample_blocks=None) as rec:`` runs every launch inside
the block on the kernel's counting twin (the module compiled with g++'s
ThreadSanitizer instrumentation, whose hooks the runtime supplies) and
appends a ``LaunchCounters`` per launch to ``rec.launches``: global load and
store requests and 32-byte sectors, shared load and store requests,
wavefronts and bank conflicts, as Nsight Compute defines them, per launch
and per access site / source line.  How accesses become warp-level requests
(divergence included) and what differs from the GPU is in ``_counters.py``.
Outside the block nothing is instrumented and launches run at full speed.

Dialect notes: ``__shared__`` variables become ``static thread_local`` (the
runtime poisons the module's TLS block before each block);
``extern __shared__ T name[];`` is rewritten on its own line into a pointer
to the dynamic shared memory window (page-aligned); ``__CUDA_ARCH__`` and
``__CUDACC__`` are not defined, ``PYGPU_EMULATOR`` is.  Scalar arguments of
type ``size_t``/``unsigned long long`` also accept a non-negative
``numpy.int64``.

What it cannot model
--------------------
* Timing and performance: occupancy, register pressure and time are not
  modelled here (``clock()``/``clock64()`` are plain counters); memory
  coalescing and bank conflicts are *counted* on request, see below.
* Concurrency between blocks: blocks run sequentially, so grid-wide
  synchronization (cooperative groups ``grid.sync()``), inter-block spin
  waits and dynamic parallelism are not supported; cooperative groups are
  not provided at all.
* Threads are never preempted: a spin-wait on shared memory written by
  another thread of the block never ends unless it calls ``__nanosleep``
  (which yields).  Memory is sequentially consistent, so bugs that need a
  weaker memory model (missing ``__threadfence``, missing ``volatile``) do
  not show.
* Warp-synchronous code without ``_sync`` (implicit lockstep, legacy
  ``__shfl``) is not modelled; the legacy intrinsics are not defined.
  ``__activemask()`` returns the lanes of the warp that have not exited (the
  emulator has no notion of convergence).
* Floating-point results are IEEE float/double computed by the CPU, with
  ``a*b+c`` contracted into FMA like nvcc does; approximate intrinsics
  (``__expf``...) are computed accurately; no half/bfloat16 types yet.
* Reads of a few bytes past the end of a buffer whose size is not a multiple
  of 256 bytes land in the slack, not in the guard page, and go unnoticed.
* Static shared memory counts variables that code refers to directly (or
  through direct calls): a ``__shared__`` variable reached only through a
  function pointer, or one g++ removed as unused while ptxas keeps it (or
  the reverse), is counted differently; padding between variables of mixed
  alignment may differ from ptxas's layout (equal for every registered
  kernel).  The other attributes (``num_regs``, ``local_size_bytes``...) are
  0.  The ``__launch_bounds__`` value is captured only when it is a literal
  or made of macros.
* ``extern __shared__ T name[];`` is rewritten by a regular expression: a
  declaration produced by a macro is not recognised.
"""

from . import testing
from ._build import cache_dir
from ._counters import LaunchCounters, count_memory
from ._errors import (CompileError, DeadlockError, EmulatorError, KernelError,
                      KernelNotFoundError, LaunchError, OutOfBoundsError)
from ._memory import empty, is_device_array, live_buffer_count, to_device, zeros
from ._module import (Function, RawKernel, RawModule, get_seed, get_timeout, seed, set_seed,
                      set_timeout)

__all__ = [
    "RawModule", "RawKernel", "Function", "empty", "zeros", "to_device", "is_device_array",
    "live_buffer_count", "cache_dir", "count_memory", "LaunchCounters", "set_seed", "get_seed", "seed", "set_timeout", "get_timeout", "testing",
    "EmulatorError", "CompileError", "DeadlockError", "OutOfBoundsError", "LaunchError",
    "KernelError", "KernelNotFoundError",
]
