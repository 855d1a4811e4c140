"""SASS statistics of the registered kernels, offline: instruction mix, hot loop and its fast path.

How it works. A kernel's module is compiled exactly as the compile gate compiles it
(`compile_gate.build_module`: CuPy's options, ``-arch=sm_XX``, ``--ptxas-options=-v``) by NVRTC 12
or 13, loaded through ctypes; the cubin goes through ``nvdisasm -json`` (the
``nvidia-cuda-nvdisasm`` wheel of the ``nvrtc13`` extra; else ``nvdisasm`` on ``PATH`` or in
``$CUDA_HOME/bin``), and the ptxas report gives registers, spills, stack frame and static shared
memory. Where ``-json`` is not understood (an older nvdisasm) the plain listing is parsed instead.
Everything is *static*: counts of instructions in the binary, not of instructions executed, and
nothing here is a GPU measurement.

The control-flow graph is built here from the instruction list, not taken from ``nvdisasm -cfg``:
nvdisasm 13 reads NVRTC 12.9 cubins for sm_75 ... sm_90 but turns its dataflow analysis off for
them, and ``-cfg`` then fails. Rules (offsets are relative to the function; every instruction of
sm_75 and newer is 16 bytes):

* a block starts at offset 0, at every branch or call target and after every block-ending
  instruction; it ends before the next block start;
* ``BRA`` ends its block with an edge to its target; it also falls through when it is
  conditional: a guard predicate other than ``@PT`` or a predicate operand (``@P1 BRA P3, ...``).
  An instruction guarded by ``@!PT`` never runs and is treated as straight-line code;
* ``EXIT`` and ``RET`` end their block with no successor (a predicated one falls through);
* ``BRX``/``JMX`` (indirect jumps, whose targets the listing does not give) end the block with no
  known successor, so a loop closed only through one is not found (none of our kernels has one);
* ``CALL`` does not end its block: the callee returns to the next instruction. Its target starts a
  block, but a subroutine (e.g. the slow path of a division) is not reached from the entry, so its
  loops are not candidates for the hot loop; its instructions do count in the whole-kernel mix;
* ``BSSY``/``BSYNC``/``BREAK``/``WARPSYNC`` manage convergence barriers and move no control, and
  are straight-line code.

Loops: dominators by the iterative algorithm of Cooper, Harvey and Kennedy ("A Simple, Fast
Dominance Algorithm", 2001) over the blocks reachable from the entry; a back edge is an edge
``t -> h`` whose head ``h`` dominates its tail; the natural loop of ``h`` is ``h`` plus every block
that reaches a tail of a back edge to ``h`` without passing ``h`` (all back edges to one header make
one loop). A retreating edge whose head does not dominate its tail (an irreducible cycle) makes no
loop. An *innermost* loop holds no other loop's header.

Definitions of the reported figures:

* ``mix``: instructions of the whole function (trailing ``NOP`` padding excluded) by class, see
  `classify`; ``instructions`` is their total. Math = FFMA, FMUL, FADD, DFMA, DMUL, DADD, HFMA2,
  HMMA, IMMA, IDP4A (an ``HFMA2`` with a zero multiplicand, the compiler's idiom for moving a
  constant, ``HFMA2.MMA R0, -RZ, RZ, 0, 0``, is not math but ``other``). One tensor-core
  instruction counts as one, however many multiply-adds it does.
* the hot loop (``loop_*``): the innermost natural loop with the most math instructions; ties go to
  the loop with more instructions, then to the lower header offset. ``loop_instructions`` counts
  every instruction of every block of the loop, ``loop_math_fraction`` = math / instructions (the
  "FFMA share" of the published SGEMM ladders), ``loop_instr_per_math`` its inverse. None when the
  function has no loop.
* the fast path (``fastpath_*``): the loop with its back edges removed is a DAG; the fast path is
  the path from the header to a latch (a block with an edge back to the header) with the most math
  instructions; among those, the one that moves the most bytes per thread through global and
  shared memory (``fastpath_memory_bytes``: LDG, STG, LDS, STS, LDGSTS, LDSM by their width, a
  predicated one counted as executed); then the one with the fewest instructions. In a tiled
  kernel that is the aligned, in-bounds, steady-state iteration: it loads the next tile from
  global memory and stores it to shared memory, through the float4 branch rather than the
  element-by-element one (same bytes, fewer instructions). Math and instruction count alone would
  pick the last iteration of a double-buffered loop, which skips the prefetch (equal math, fewer
  instructions), and loads alone a path that loads the tile but skips its store to shared memory
  (the compiler tests ``t + 1 < tiles`` twice and the two branches are not known to agree):
  sgemm_double_buffered would show 91.6% math instead of 84.8%, int8_gemm_mma 28.6% instead of
  9.0% (sm_90, NVRTC 13.5). (Should an innermost loop still hold a cycle, which only an
  irreducible region can, the edges that close it in a depth-first walk from the header are
  ignored.)
* Where a kernel leaves its k-step loop rolled (no ``#pragma unroll``, as sgemm_blocktile_2d and
  int8_gemm_dp4a do), the hot loop is one k step, not the K tile with its loads: 81.0% for
  sgemm_blocktile_2d on sm_86 (NVRTC 13.5) where the whole K tile (fast path, 8 k steps) is 66.9%.

Classes are read from the opcode and its modifiers (see `classify`); instructions outside the named
classes, e.g. ``VIADD``, ``LOP3``, ``ISETP``, ``MOV``, ``LDC``, are ``other``. Register counts and the
code itself differ between NVRTC 12 and 13 for the same source (sgemm_vectorized on sm_90: 109
registers under NVRTC 12.9, 105 under 13.5), so every result names its compiler (`SassStats.label`, e.g. "NVRTC 13.5, sm_90").

Cache: the disassembly and ptxas figures of each module are kept on disk, in
``$PYGPU_OPS_CACHE_DIR/sass``, else ``$XDG_CACHE_HOME/pygpu_ops/sass``, else
``~/.cache/pygpu_ops/sass``, keyed by the expanded source text, the options, the name expressions,
the arch, the NVRTC version and library and the nvdisasm version (one JSON file per module, written
to a temporary file and renamed into place), and memoized in the process. Deleting the folder
clears it. ``python -m pygpu_ops.analysis.sass`` prints the table for every registered kernel.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, FrozenSet, Hashable, Iterable, List, Mapping, Optional, Sequence, Tuple

from .._runtime import compile_gate, kernels as registry, sources
from .._runtime.compile_gate import GateUnavailable
from .._runtime.emulator._build import cache_dir as _package_cache_dir
from .._runtime.kernels import Kernel

#: Bump when the cached file layout changes.
FORMAT = 1
#: The instruction classes of `mix`, in table order.
CLASSES: Tuple[str, ...] = (
    "FFMA", "FMUL", "FADD", "DFMA", "DMUL", "DADD", "HFMA2", "HMMA", "IMMA", "IDP4A",
    "IMAD", "IADD3", "MUFU",
    "LDG.32", "LDG.64", "LDG.128", "STG.32", "STG.64", "STG.128",
    "LDS.32", "LDS.64", "LDS.128", "STS.32", "STS.64", "STS.128", "LDSM", "LDGSTS",
    "LDL", "STL", "BAR", "SHFL", "BRA", "other",
)
MATH: FrozenSet[str] = frozenset({"FFMA", "FMUL", "FADD", "DFMA", "DMUL", "DADD", "HFMA2", "HMMA", "IMMA", "IDP4A"})
_BY_OPCODE = frozenset({"FFMA", "FMUL", "FADD", "DFMA", "DMUL", "DADD", "HMMA", "IMMA", "IMAD", "IADD3", "MUFU",
                        "LDSM", "LDGSTS", "LDL", "STL", "BAR", "SHFL", "BRA"})
_BY_WIDTH = frozenset({"LDG", "STG", "LDS", "STS"})
INSTRUCTION_BYTES = 16   # sm_70 and newer


class SassUnavailable(GateUnavailable):
    """NVRTC of the requested major, or nvdisasm, is not installed (or lacks the arch)."""


# ------------------------------------------------------------------------------------------------
# Instructions and their classes
# ------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Instruction:
    """One SASS instruction: offset in bytes from the function start, guard, opcode, operands.

    ``operands`` is nvdisasm's text without blanks, branch targets as hex offsets (``"P3,0xad0"``).
    """

    offset: int
    opcode: str
    operands: str = ""
    predicate: str = ""   # the guard, e.g. "@P0" or "@!P1"; "" when unguarded

    @property
    def kind(self) -> str:
        return classify(self.opcode, self.operands)

    def as_list(self) -> list:
        return [self.offset, self.predicate, self.opcode, self.operands]

    @classmethod
    def from_list(cls, row: Sequence) -> "Instruction":
        offset, predicate, opcode, operands = row
        return cls(int(offset), opcode, operands, predicate)


def classify(opcode: str, operands: str = "") -> str:
    """The `CLASSES` entry of one instruction.

    The class is the opcode without modifiers (``FFMA.FTZ.RM`` -> FFMA, ``IMAD.MOV.U32`` -> IMAD,
    ``BAR.SYNC.DEFER_BLOCKING`` -> BAR, ``MUFU.EX2`` -> MUFU, ``LDSM.16.M88.4`` -> LDSM,
    ``LDGSTS.E.BYPASS.128`` -> LDGSTS), except:

    * global and shared loads and stores carry their width: ``.128`` and ``.64`` modifiers give
      that width, anything else (no width, or ``.U8``/``.S8``/``.U16``/``.S16``, one register per
      thread) is ``.32``: ``LDS.U.128`` -> LDS.128, ``LDG.E.128.CONSTANT`` -> LDG.128,
      ``LDG.E.U8`` -> LDG.32;
    * ``IDP.4A.*`` (and the older spelling ``IDP4A``) is IDP4A; ``IDP.2A`` is other;
    * ``HFMA2`` with a zero multiplicand (``RZ``) computes no product: it is the move idiom
      ``HFMA2.MMA Rd, -RZ, RZ, c0, c1`` and counts as other.
    """
    if not isinstance(opcode, str) or not opcode:
        raise ValueError(f"opcode must be a non-empty string, got {opcode!r}")
    parts = opcode.upper().split(".")
    base, mods = parts[0], parts[1:]
    if base in _BY_OPCODE:
        return base
    if base in _BY_WIDTH:
        width = "128" if "128" in mods else "64" if "64" in mods else "32"
        return f"{base}.{width}"
    if base == "IDP4A" or (base == "IDP" and "4A" in mods):
        return "IDP4A"
    if base == "HFMA2":
        factors = [op.strip().lstrip("-|").rstrip("|").split(".")[0] for op in operands.split(",")[1:3]]
        return "other" if "RZ" in factors else "HFMA2"
    return "other"


def count_mix(instructions: Iterable[Instruction]) -> Dict[str, int]:
    """Instruction count per class, every class of `CLASSES` present (zeros too)."""
    got = Counter(i.kind for i in instructions)
    return {c: got.get(c, 0) for c in CLASSES}


def math_count(mix: Mapping[str, int]) -> int:
    return sum(n for c, n in mix.items() if c in MATH)


_WIDTHS = (("128", 16), ("64", 8), ("U16", 2), ("S16", 2), ("U8", 1), ("S8", 1))


def memory_bytes(ins: Instruction) -> int:
    """Bytes one thread moves with ``ins`` through global or shared memory, 0 for other instructions.

    LDG, STG, LDS, STS and LDGSTS by their width modifier (none: 4 bytes); LDSM by its matrix count
    (``.4``: four 8 x 8 b16 matrices, 16 bytes a thread).
    """
    parts = ins.opcode.split(".")
    if parts[0] in _BY_WIDTH or parts[0] == "LDGSTS":
        return next((n for mod, n in _WIDTHS if mod in parts[1:]), 4)
    if parts[0] == "LDSM":
        return 16 if "4" in parts[1:] else 8 if "2" in parts[1:] else 4
    return 0


# ------------------------------------------------------------------------------------------------
# Control flow
# ------------------------------------------------------------------------------------------------
_HEX = re.compile(r"0x[0-9a-fA-F]+")
_PRED_OPERAND = re.compile(r"!?U?P[0-6]")


@dataclass(frozen=True)
class _Flow:
    ends: bool                     # the instruction ends its basic block
    targets: Tuple[int, ...]       # successor offsets it may jump to
    falls_through: bool            # control may continue with the next instruction
    call: Optional[int] = None     # a CALL's target: starts a block, is not a successor


def _flow(ins: Instruction) -> _Flow:
    base = ins.opcode.split(".")[0]
    if ins.predicate == "@!PT":
        return _Flow(False, (), True)
    ops = ins.operands.split(",") if ins.operands else []
    guarded = ins.predicate not in ("", "@PT")
    if base == "BRA":
        if not ops or not _HEX.fullmatch(ops[-1]):
            raise ValueError(f"cannot read the target of {ins.opcode} {ins.operands} at {ins.offset:#x}")
        conditional = guarded or any(_PRED_OPERAND.fullmatch(o) for o in ops[:-1])
        return _Flow(True, (int(ops[-1], 16),), conditional)
    if base in ("EXIT", "RET", "BRX", "JMX"):
        return _Flow(True, (), guarded)
    if base == "CALL" and ops and _HEX.fullmatch(ops[-1]):
        return _Flow(False, (), True, int(ops[-1], 16))
    return _Flow(False, (), True)


@dataclass
class Block:
    """Instructions ``[first, stop)`` of the function's list, and the successor block numbers."""

    index: int
    first: int
    stop: int
    succs: List[int] = field(default_factory=list)

    def instructions(self, code: Sequence[Instruction]) -> Sequence[Instruction]:
        return code[self.first:self.stop]


def basic_blocks(code: Sequence[Instruction]) -> List[Block]:
    """Split ``code`` (one function, in offset order) into basic blocks with their successors."""
    if not code:
        return []
    at = {ins.offset: i for i, ins in enumerate(code)}
    flows = [_flow(ins) for ins in code]

    def index_of(offset: int, ins: Instruction) -> int:
        if offset not in at:
            raise ValueError(f"{ins.opcode} at {ins.offset:#x} targets {offset:#x}, not an instruction of the function")
        return at[offset]

    starts = {0}
    for i, (ins, fl) in enumerate(zip(code, flows)):
        starts.update(index_of(t, ins) for t in fl.targets)
        if fl.call is not None:
            starts.add(index_of(fl.call, ins))
        if fl.ends and i + 1 < len(code):
            starts.add(i + 1)
    order = sorted(starts)
    block_of = {first: b for b, first in enumerate(order)}
    blocks = [Block(b, first, order[b + 1] if b + 1 < len(order) else len(code)) for b, first in enumerate(order)]
    for blk in blocks:
        fl = flows[blk.stop - 1]
        succs = [block_of[at[t]] for t in fl.targets]
        if fl.falls_through and blk.stop < len(code):
            succs.append(block_of[blk.stop])
        blk.succs = list(dict.fromkeys(succs))
    return blocks


def _reverse_postorder(succ: Mapping[Hashable, Sequence[Hashable]], entry: Hashable) -> List[Hashable]:
    seen, post = {entry}, []
    stack = [(entry, iter(succ.get(entry, ())))]
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            post.append(node)
        elif nxt not in seen:
            seen.add(nxt)
            stack.append((nxt, iter(succ.get(nxt, ()))))
    return post[::-1]


def dominators(succ: Mapping[Hashable, Sequence[Hashable]], entry: Hashable) -> Dict[Hashable, Hashable]:
    """Immediate dominators of the nodes reachable from ``entry`` (``entry`` maps to itself).

    ``succ`` maps a node to its successors. Cooper, Harvey and Kennedy's iteration over reverse
    postorder: each node's idom is the nearest common dominator of its processed predecessors.
    """
    rpo = _reverse_postorder(succ, entry)
    number = {n: i for i, n in enumerate(rpo)}
    preds: Dict[Hashable, List[Hashable]] = {n: [] for n in rpo}
    for n in rpo:
        for s in succ.get(n, ()):
            preds[s].append(n)
    idom = {entry: entry}

    def intersect(a, b):
        while a != b:
            while number[a] > number[b]:
                a = idom[a]
            while number[b] > number[a]:
                b = idom[b]
        return a

    changed = True
    while changed:
        changed = False
        for n in rpo[1:]:
            done = [p for p in preds[n] if p in idom]
            new = done[0]
            for p in done[1:]:
                new = intersect(p, new)
            if idom.get(n) != new:
                idom[n] = new
                changed = True
    return idom


def dominates(idom: Mapping[Hashable, Hashable], a: Hashable, b: Hashable) -> bool:
    """Whether ``a`` dominates ``b`` (every node dominates itself) in the tree ``idom``."""
    if b not in idom:
        return False
    while True:
        if a == b:
            return True
        if idom[b] == b:
            return False
        b = idom[b]


def back_edges(succ: Mapping[Hashable, Sequence[Hashable]], entry: Hashable) -> List[Tuple[Hashable, Hashable]]:
    """Edges ``(tail, head)`` between reachable nodes whose head dominates the tail."""
    idom = dominators(succ, entry)
    return [(t, h) for t in idom for h in succ.get(t, ()) if dominates(idom, h, t)]


@dataclass(frozen=True)
class Loop:
    header: Hashable
    body: FrozenSet[Hashable]            # header included
    latches: Tuple[Hashable, ...]        # tails of the back edges to the header


def natural_loops(succ: Mapping[Hashable, Sequence[Hashable]], entry: Hashable) -> List[Loop]:
    """One natural loop per header of a back edge (all its back edges merged), by header order."""
    edges = back_edges(succ, entry)
    reachable = set(dominators(succ, entry))
    preds: Dict[Hashable, List[Hashable]] = {n: [] for n in reachable}
    for n in reachable:
        for s in succ.get(n, ()):
            preds[s].append(n)
    latches: Dict[Hashable, List[Hashable]] = {}
    for t, h in edges:
        latches.setdefault(h, []).append(t)
    loops = []
    for h, ts in latches.items():
        body, work = {h}, [t for t in ts if t != h]
        body.update(work)
        while work:
            for p in preds[work.pop()]:
                if p not in body:
                    body.add(p)
                    work.append(p)
        loops.append(Loop(h, frozenset(body), tuple(ts)))
    order = {n: i for i, n in enumerate(_reverse_postorder(succ, entry))}
    return sorted(loops, key=lambda lp: order[lp.header])


def innermost_loops(loops: Sequence[Loop]) -> List[Loop]:
    """The loops whose body holds no other loop's header."""
    headers = {lp.header for lp in loops}
    return [lp for lp in loops if not (headers - {lp.header}) & lp.body]


def best_path(loop: Loop, succ: Mapping[Hashable, Sequence[Hashable]],
              weight: Mapping[Hashable, Tuple[int, ...]]) -> List[Hashable]:
    """The header-to-latch path through ``loop`` without its back edges whose summed weight is largest.

    ``weight[node]`` is a tuple of scores (e.g. math, then minus instructions); paths compare by
    the element-wise sum of their nodes' tuples, lexicographically. Edges into the header are the
    back edges; an edge to a node still on the depth-first stack (a cycle left in an irreducible
    region) is ignored too.
    """
    body = loop.body
    topo, state = [], {loop.header: 1}   # 1 on the stack, 2 finished
    dag: Dict[Hashable, List[Hashable]] = {}
    stack = [(loop.header, iter(succ.get(loop.header, ())))]
    while stack:
        node, it = stack[-1]
        nxt = next(it, None)
        if nxt is None:
            stack.pop()
            state[node] = 2
            topo.append(node)
            continue
        if nxt not in body or nxt == loop.header or state.get(nxt) == 1:
            continue
        dag.setdefault(node, []).append(nxt)
        if nxt not in state:
            state[nxt] = 1
            stack.append((nxt, iter(succ.get(nxt, ()))))
    topo.reverse()
    # best[n]: the summed weight of the best path header..n, and n's predecessor on it
    best: Dict[Hashable, Tuple[Tuple[int, ...], Optional[Hashable]]] = {loop.header: (tuple(weight[loop.header]), None)}
    for n in topo:
        if n not in best:
            continue
        score = best[n][0]
        for s in dag.get(n, ()):
            cand = tuple(a + b for a, b in zip(score, weight[s]))
            if s not in best or cand > best[s][0]:
                best[s] = (cand, n)
    ends = [t for t in loop.latches if t in best]
    end = max(ends, key=lambda t: best[t][0])
    path = [end]
    while best[path[-1]][1] is not None:
        path.append(best[path[-1]][1])
    return path[::-1]


# ------------------------------------------------------------------------------------------------
# One function's statistics
# ------------------------------------------------------------------------------------------------
def _ratio(num: int, den: int) -> Optional[float]:
    return num / den if den else None


@dataclass
class LoopStats:
    """The hot loop and its fast path of one function (see the module docstring)."""

    loops: int                       # natural loops reachable from the entry
    header: Optional[int] = None     # offset of the hot loop's header
    blocks: int = 0
    instructions: int = 0
    math: int = 0
    mix: Dict[str, int] = field(default_factory=dict)
    fast_blocks: int = 0
    fast_instructions: int = 0
    fast_math: int = 0
    fast_mix: Dict[str, int] = field(default_factory=dict)
    fast_memory_bytes: int = 0


def strip_padding(code: Sequence[Instruction]) -> Sequence[Instruction]:
    """``code`` without the NOPs that pad the function's section to its alignment."""
    end = len(code)
    while end and code[end - 1].opcode == "NOP":
        end -= 1
    return code[:end]


def hot_loop(code: Sequence[Instruction]) -> LoopStats:
    """Find the hot loop of one function's instructions and measure it and its fast path."""
    blocks = basic_blocks(code)
    if not blocks:
        return LoopStats(0)
    succ = {b.index: b.succs for b in blocks}
    mixes = {b.index: count_mix(b.instructions(code)) for b in blocks}
    moved = {b.index: sum(map(memory_bytes, b.instructions(code))) for b in blocks}
    weight = {b.index: (math_count(mixes[b.index]), b.stop - b.first) for b in blocks}
    loops = natural_loops(succ, 0)
    inner = innermost_loops(loops)
    if not inner:
        return LoopStats(len(loops))

    def size(lp):
        return (sum(weight[n][0] for n in lp.body), sum(weight[n][1] for n in lp.body))

    hot = max(inner, key=lambda lp: (*size(lp), -blocks[lp.header].first))
    path = best_path(hot, succ, {n: (weight[n][0], moved[n], -weight[n][1]) for n in hot.body})

    def total(nodes):
        out = Counter()
        for n in nodes:
            out.update(mixes[n])
        return {c: out.get(c, 0) for c in CLASSES}

    loop_mix, fast_mix = total(hot.body), total(path)
    return LoopStats(len(loops), code[blocks[hot.header].first].offset, len(hot.body),
                     sum(loop_mix.values()), math_count(loop_mix), loop_mix,
                     len(path), sum(fast_mix.values()), math_count(fast_mix), fast_mix, sum(moved[n] for n in path))


@dataclass
class SassStats:
    """Static SASS figures of one kernel under one compiler and arch; `as_json` for a dict."""

    kernel: str                      # the name expression, e.g. "sgemm_naive<32, 32>"
    source: str
    function: str                    # the mangled symbol
    compiler: str                    # "NVRTC 13.5"
    nvdisasm: str                    # "13.5.37"
    arch: str
    registers: int
    spill_bytes: int                 # spill stores + spill loads, ptxas
    stack_bytes: int
    static_smem: int
    instructions: int
    mix: Dict[str, int]
    loops: int
    loop_header: Optional[int]
    loop_blocks: int
    loop_instructions: int
    loop_math: int
    loop_math_fraction: Optional[float]
    loop_instr_per_math: Optional[float]
    loop_mix: Dict[str, int]
    fastpath_blocks: int
    fastpath_instructions: int
    fastpath_math: int
    fastpath_math_fraction: Optional[float]
    fastpath_instr_per_math: Optional[float]
    fastpath_mix: Dict[str, int]
    fastpath_memory_bytes: int       # bytes one thread moves through global and shared memory there

    @property
    def label(self) -> str:
        return f"{self.compiler}, {self.arch}"

    def as_json(self) -> dict:
        return asdict(self)


def function_stats(code: Sequence[Instruction], *, kernel: str = "", source: str = "", function: str = "",
                   compiler: str = "", nvdisasm: str = "", arch: str = "",
                   ptxas: Optional[Mapping[str, int]] = None) -> SassStats:
    """`SassStats` of one disassembled function; ``ptxas`` is its `compile_gate.parse_ptxas` entry."""
    code = strip_padding(code)
    p = dict(ptxas or {})
    lp = hot_loop(code)
    return SassStats(
        kernel=kernel, source=source, function=function, compiler=compiler, nvdisasm=nvdisasm, arch=arch,
        registers=p.get("registers", 0), spill_bytes=p.get("spill_stores", 0) + p.get("spill_loads", 0),
        stack_bytes=p.get("stack_frame", 0), static_smem=p.get("smem", 0),
        instructions=len(code), mix=count_mix(code), loops=lp.loops,
        loop_header=lp.header, loop_blocks=lp.blocks, loop_instructions=lp.instructions, loop_math=lp.math,
        loop_math_fraction=_ratio(lp.math, lp.instructions), loop_instr_per_math=_ratio(lp.instructions, lp.math),
        loop_mix=lp.mix, fastpath_blocks=lp.fast_blocks, fastpath_instructions=lp.fast_instructions,
        fastpath_math=lp.fast_math, fastpath_math_fraction=_ratio(lp.fast_math, lp.fast_instructions),
        fastpath_instr_per_math=_ratio(lp.fast_instructions, lp.fast_math), fastpath_mix=lp.fast_mix,
        fastpath_memory_bytes=lp.fast_memory_bytes)


# ------------------------------------------------------------------------------------------------
# nvdisasm
# ------------------------------------------------------------------------------------------------
_VERSION = re.compile(r"V(\d+)\.(\d+)\.(\d+)")


class Nvdisasm:
    """One nvdisasm executable and its version."""

    def __init__(self, path: str) -> None:
        self.path = path
        try:
            out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=60)
        except (OSError, subprocess.SubprocessError) as exc:
            raise SassUnavailable(f"{path}: {exc}") from exc
        m = _VERSION.search(out.stdout)
        if out.returncode or not m:
            raise SassUnavailable(f"{path} --version did not give a version: {(out.stdout + out.stderr).strip()}")
        self.version_tuple = tuple(int(g) for g in m.groups())
        self.version = ".".join(m.groups())

    def __repr__(self) -> str:
        return f"Nvdisasm({self.version}, {self.path!r})"

    def run(self, cubin: bytes, *options: str) -> subprocess.CompletedProcess:
        """nvdisasm ``options`` on ``cubin`` (written to a temporary file), its output as text."""
        with tempfile.TemporaryDirectory(prefix="pygpu_ops-sass-") as d:
            path = os.path.join(d, "module.cubin")
            with open(path, "wb") as f:
                f.write(cubin)
            return subprocess.run([self.path, *options, path], capture_output=True, text=True, timeout=600)

    def disassemble(self, cubin: bytes, arch: str) -> Dict[str, List[Instruction]]:
        """Every function of ``cubin`` (mangled name -> instructions); the cubin must be for ``arch``."""
        if not isinstance(cubin, (bytes, bytearray)) or not cubin.startswith(b"\x7fELF"):
            raise ValueError("cubin must be the bytes of a CUDA ELF image (they start with b'\\x7fELF')")
        want = _check_arch(arch)
        out = self.run(bytes(cubin), "-json")
        if out.returncode == 0:
            try:
                doc = json.loads(out.stdout)
            except json.JSONDecodeError:
                doc = None
            if doc is not None:
                sm = doc[0]["SM"]["version"]
                got = f"sm_{sm['major']}{sm['minor']}"
                funcs = {f["function-name"]: _from_json(f) for f in doc[1]}
                return _checked(funcs, got, want)
        # An nvdisasm without -json (or whose JSON does not parse): read the plain listing.
        out = self.run(bytes(cubin), "-c")
        if out.returncode:
            raise RuntimeError(f"nvdisasm {self.version} failed on the {arch} cubin: {out.stderr.strip()}")
        m = re.search(r"^\s*\.target\s+(sm_\w+)", out.stdout, re.MULTILINE)
        return _checked(parse_listing(out.stdout), m.group(1) if m else want, want)


def _check_arch(arch: str) -> str:
    if not isinstance(arch, str) or not re.fullmatch(r"sm_\d+[a-z]?", arch):
        raise ValueError(f"arch must look like 'sm_90', got {arch!r}")
    return arch


def _checked(funcs: Dict[str, List[Instruction]], got: str, want: str) -> Dict[str, List[Instruction]]:
    if got.rstrip("af") != want.rstrip("af"):
        raise ValueError(f"arch is {want!r} but the cubin is for {got}")
    return funcs


def _from_json(func: dict) -> List[Instruction]:
    start = int(func.get("start", 0))
    if start:
        raise ValueError(f"{func['function-name']}: nvdisasm reports start {start:#x}; offsets would be shifted")
    return [Instruction(i * INSTRUCTION_BYTES, ins["opcode"], re.sub(r"\s+", "", ins.get("operands", "")),
                        ins.get("predicate", "")) for i, ins in enumerate(func["sass-instructions"])]


_LST_FUNC = re.compile(r"^\.text\.(\S+):\s*$")
_LST_LABEL = re.compile(r"^(\.L\w+):\s*$")
_LST_INS = re.compile(r"/\*([0-9a-fA-F]+)\*/\s+(@!?U?P\w+\s+)?([A-Z][A-Z0-9_.]*)\s*([^;]*);")
_LST_REF = re.compile(r"`\((\.L\w+)\)")


def parse_listing(text: str) -> Dict[str, List[Instruction]]:
    """Functions of a plain ``nvdisasm -c`` listing, in the form ``-json`` gives them.

    Operands lose their blanks and a branch's ```(.L_x_3)`` becomes the label's hex offset.
    """
    funcs: Dict[str, List[tuple]] = {}
    labels: Dict[str, Dict[str, int]] = {}
    pending: List[str] = []
    current = None
    for line in text.splitlines():
        stripped = line.strip()
        m = _LST_FUNC.match(stripped)
        if m:
            current = m.group(1)
            funcs[current], labels[current], pending = [], {}, []
            continue
        if current is None:
            continue
        m = _LST_LABEL.match(stripped)
        if m:
            pending.append(m.group(1))
            continue
        m = _LST_INS.search(line)
        if m:
            offset = int(m.group(1), 16)
            for name in pending:
                labels[current][name] = offset
            pending = []
            funcs[current].append((offset, (m.group(2) or "").strip(), m.group(3), re.sub(r"\s+", "", m.group(4))))
    out = {}
    for name, rows in funcs.items():
        def resolve(ref, name=name):
            return hex(labels[name][ref.group(1)])
        out[name] = [Instruction(o, op, _LST_REF.sub(resolve, ops), pred) for o, pred, op, ops in rows]
    return out


def _nvdisasm_candidates() -> List[str]:
    found = [str(p) for base in compile_gate.nvidia_wheel_dirs() for p in sorted(base.glob("*/bin/nvdisasm"))
             if p.is_file()]
    on_path = shutil.which("nvdisasm")
    if on_path:
        found.append(on_path)
    for home in (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"):
        if home and (Path(home) / "bin" / "nvdisasm").is_file():
            found.append(str(Path(home) / "bin" / "nvdisasm"))
    return list(dict.fromkeys(found))


_NVDISASM: List[Nvdisasm] = []
_NVDISASM_LOCK = threading.Lock()


def load_nvdisasm() -> Nvdisasm:
    """The newest nvdisasm found: the pip wheel's (under ``site-packages/nvidia/*/bin``), ``PATH``,
    ``$CUDA_HOME/bin``; `SassUnavailable` when there is none."""
    with _NVDISASM_LOCK:
        if _NVDISASM:
            return _NVDISASM[0]
        tools, problems = [], []
        for path in _nvdisasm_candidates():
            try:
                tools.append(Nvdisasm(path))
            except SassUnavailable as exc:
                problems.append(str(exc))
        if not tools:
            raise SassUnavailable(
                "nvdisasm not found: pip install 'pygpu_ops[nvrtc13]' (the nvidia-cuda-nvdisasm wheel), or put "
                "a CUDA toolkit's nvdisasm on PATH" + (f"; tried {'; '.join(problems)}" if problems else ""))
        _NVDISASM.append(max(tools, key=lambda t: t.version_tuple))
        return _NVDISASM[0]


def disassemble(cubin: bytes, arch: str) -> Dict[str, List[Instruction]]:
    """Every function of ``cubin`` (mangled name -> `Instruction` list) with the nvdisasm found."""
    return load_nvdisasm().disassemble(cubin, arch)


# ------------------------------------------------------------------------------------------------
# Compiling, caching, the public entry points
# ------------------------------------------------------------------------------------------------
def cache_dir() -> Path:
    """Where module disassemblies are kept (created if needed): the package cache's ``sass`` folder."""
    return _package_cache_dir("sass")


#: Modules compiled and disassembled in this process, and those read from the disk cache.
stats = {"compiled": 0, "loaded": 0}
_MEMO: Dict[str, dict] = {}
_KEY_LOCKS: Dict[str, threading.Lock] = {}
_MEMO_LOCK = threading.Lock()


def _module_kernels(kernel: Kernel) -> List[Kernel]:
    """The kernels compiled together with ``kernel``: its registered module, or itself alone."""
    mates = [k for k in registry.REGISTRY.values() if k.module_key == kernel.module_key]
    return mates if kernel in mates else [kernel]


def _tools(arch: str, nvrtc: int):
    _check_arch(arch)
    try:
        nv = compile_gate.load_nvrtc(nvrtc)
    except GateUnavailable as exc:
        raise SassUnavailable(str(exc)) from exc
    if arch not in nv.archs:
        raise SassUnavailable(f"NVRTC {nv.version} does not compile for {arch} (it knows {', '.join(nv.archs)})")
    return nv, load_nvdisasm()


def _module(kernel: Kernel, arch: str, nv, dis: Nvdisasm) -> dict:
    """The cached record of ``kernel``'s module: lowered names, ptxas figures, disassembly."""
    group = _module_kernels(kernel)
    exprs = [k.name_expression for k in group]
    key_text = json.dumps([FORMAT, sources.expand(kernel.source), compile_gate.gate_options(kernel, arch), exprs,
                           arch, nv.version, nv.path, dis.version])
    key = hashlib.sha256(key_text.encode()).hexdigest()
    with _MEMO_LOCK:
        lock = _KEY_LOCKS.setdefault(key, threading.Lock())
    with lock:
        if key in _MEMO:
            return _MEMO[key]
        path = cache_dir() / f"{key}.json"
        try:
            record = json.loads(path.read_text())
            names = [record["lowered"][e] for e in exprs]
            if not all(n in record["functions"] and n in record["ptxas"] for n in names):
                raise ValueError("incomplete")
            stats["loaded"] += 1
        except (OSError, ValueError, KeyError, TypeError):   # absent, truncated or of another layout
            record = _build(group, arch, nv, dis)
            stats["compiled"] += 1
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
            with os.fdopen(fd, "w") as f:
                json.dump(record, f)
            os.replace(tmp, path)
        _MEMO[key] = record
        return record


def _build(group: Sequence[Kernel], arch: str, nv, dis: Nvdisasm) -> dict:
    res, reports, error = compile_gate.build_module(group, arch, nv, output="cubin")
    if error is not None:
        raise RuntimeError(f"NVRTC {nv.version} could not compile {error.source} for {arch}:\n{error.log}")
    ptxas = compile_gate.parse_ptxas(res.log)
    funcs = dis.disassemble(res.output, arch)
    wanted = {res.lowered[k.name_expression] for k in group}
    return {"lowered": res.lowered, "ptxas": {f: ptxas[f] for f in wanted},
            "functions": {f: [i.as_list() for i in funcs[f]] for f in wanted}}


def _lookup(kernel: Kernel, arch: str, nvrtc: int):
    """(NVRTC, nvdisasm, mangled name, instructions, ptxas figures) of ``kernel``."""
    if not isinstance(kernel, Kernel):
        raise TypeError(f"kernel must be a pygpu_ops._runtime.kernels.Kernel, got {type(kernel).__name__}")
    nv, dis = _tools(arch, nvrtc)
    record = _module(kernel, arch, nv, dis)
    fn = record["lowered"][kernel.name_expression]
    return nv, dis, fn, [Instruction.from_list(row) for row in record["functions"][fn]], record["ptxas"][fn]


def kernel_sass(kernel: Kernel, arch: str = "sm_90", nvrtc: int = 13) -> List[Instruction]:
    """The disassembly of ``kernel`` compiled by NVRTC ``nvrtc`` for ``arch`` (cached like `sass_stats`)."""
    return _lookup(kernel, arch, nvrtc)[3]


def sass_stats(kernel: Kernel, arch: str = "sm_90", nvrtc: int = 13) -> SassStats:
    """`SassStats` of ``kernel`` compiled by NVRTC ``nvrtc`` (12 or 13) for ``arch``.

    Raises `SassUnavailable` when that NVRTC or nvdisasm is missing or the NVRTC lacks ``arch``.
    """
    nv, dis, fn, code, ptxas = _lookup(kernel, arch, nvrtc)
    return function_stats(code, kernel=kernel.name_expression, source=kernel.source, function=fn,
                          compiler=f"NVRTC {nv.version}", nvdisasm=dis.version, arch=arch, ptxas=ptxas)


def why_unavailable(nvrtc: int = 13, arch: str = "sm_90") -> Optional[str]:
    """Why `sass_stats` cannot run for this NVRTC major and arch here, or None when it can."""
    try:
        _tools(arch, nvrtc)
    except SassUnavailable as exc:
        return str(exc)
    return None


def ladder_table(arch: str = "sm_90", nvrtc: int = 13, kernels: Optional[Iterable[Kernel]] = None,
                 jobs: int = 0) -> List[SassStats]:
    """`sass_stats` of every registered kernel (or of ``kernels``), modules compiled in parallel."""
    chosen = list(registry.all_kernels() if kernels is None else kernels)
    nv, dis = _tools(arch, nvrtc)
    firsts = list({k.module_key: k for k in reversed(chosen)}.values())
    with ThreadPoolExecutor(max_workers=jobs or max(1, os.cpu_count() or 1)) as pool:
        list(pool.map(lambda k: _module(k, arch, nv, dis), firsts))   # NVRTC and nvdisasm drop the GIL
    return [sass_stats(k, arch, nvrtc) for k in chosen]


def _pct(x: Optional[float]) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: Optional[float]) -> str:
    return "-" if x is None else f"{x:.2f}"


def format_table(rows: Sequence[SassStats]) -> str:
    """The text table of `main`: one line per kernel, the compiler and arch in the title."""
    head = ("kernel", "regs", "spill B", "stack B", "loop math", "fast math", "loop i/m", "fast i/m",
            "LDS.128", "LDSM", "LDGSTS", "IMMA")
    table = [head] + [(s.kernel, str(s.registers), str(s.spill_bytes), str(s.stack_bytes),
                       _pct(s.loop_math_fraction), _pct(s.fastpath_math_fraction), _num(s.loop_instr_per_math),
                       _num(s.fastpath_instr_per_math), str(s.mix["LDS.128"]), str(s.mix["LDSM"]),
                       str(s.mix["LDGSTS"]), str(s.mix["IMMA"])) for s in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths)))
             for r in table]
    lines.insert(1, "  ".join("-" * w for w in widths))
    labels = sorted({f"{s.label} (nvdisasm {s.nvdisasm})" for s in rows})
    return "\n".join([f"SASS statistics, static: {'; '.join(labels) or 'no kernels'}"] + lines)


def main(argv: Optional[Sequence[str]] = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pygpu_ops.analysis.sass", description=__doc__.splitlines()[0])
    ap.add_argument("--arch", default="sm_90")
    ap.add_argument("--nvrtc", type=int, default=13, choices=compile_gate.NVRTC_MAJORS)
    ap.add_argument("--json", action="store_true", help="print the full statistics as JSON")
    ap.add_argument("names", nargs="*", help="only kernels whose name expression contains one of these")
    args = ap.parse_args(argv)
    chosen = [k for k in registry.all_kernels() if not args.names or any(n in k.name_expression for n in args.names)]
    try:
        rows = ladder_table(args.arch, args.nvrtc, chosen)
    except SassUnavailable as exc:
        print(f"SASS statistics unavailable: {exc}", file=sys.stderr)
        return 2
    except ValueError as exc:   # a malformed --arch
        ap.error(str(exc))
    print(json.dumps([s.as_json() for s in rows], indent=1) if args.json else format_table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
