"""``pygpu-ops analyze``: counts, SASS, occupancy and a modeled time per kernel launch, no GPU.

For each case of :mod:`.cases` (a public call on the emulator backend) the call runs under the
emulator's memory counters (:func:`pygpu_ops._runtime.emulator.count_memory`); every launch it
makes becomes one row that joins:

* the launch's **counters** (global requests and sectors, shared requests, wavefronts and bank
  conflicts), exact when every block ran, else extrapolated from a sample of blocks
  (``blocks_run`` of ``blocks_total``);
* the kernel's **SASS statistics** (:mod:`.sass`: registers, spills, the instruction mix and the
  hot loop's FFMA share) from the NVRTC cubin for the GPU's architecture;
* its **occupancy** (:mod:`.occupancy`) and the **modeled time** (:mod:`.model`) on the named GPU
  (:mod:`.gpus`).

Everything here is a count or a model, never a measurement: the table and the JSON say so. The
JSON keys of a row are fixed (:data:`ROW_KEYS`); ``profiling/update_readme.py`` renders the ladder
table from them, next to the measured one when a GPU run exists.
"""
from __future__ import annotations

import sys
import time
from typing import Dict, List, Optional, Sequence

from .._runtime import emulator as emu
from .._runtime.kernels import Kernel, all_kernels
from . import cases as _cases
from . import gpus as _gpus
from . import model as _model
from . import occupancy as _occ

#: The keys every row has (more may follow them).
ROW_KEYS = (
    "op", "variant", "kernel", "shape", "flops", "bytes_min",
    "gld_requests", "gld_sectors", "gst_requests", "gst_sectors",
    "lds_requests", "lds_wavefronts", "sts_requests", "sts_wavefronts", "smem_bank_conflicts",
    "registers", "spill_bytes", "static_smem", "dynamic_smem", "occupancy", "limiter",
    "sass_mix", "loop_ffma_fraction", "compiler",
    "gpu", "modeled_us", "bound",
)

LABEL = ("counts from the CPU emulator, SASS from the offline NVRTC cubin, occupancy and time from "
         "a stated model: modeled, not measured")

DEFAULT_GPU = "H200"
DEFAULT_SAMPLE = 8
NVRTC_MAJOR = 13


def _registry() -> Dict[str, Kernel]:
    out: Dict[str, Kernel] = {}
    for k in all_kernels():
        out.setdefault(k.name_expression, k)
    return out


def _sass(kernel: Optional[Kernel], arch: str, cache: Dict):
    """(SassStats or None, reason when None)."""
    if kernel is None:
        return None, "kernel not in the registry"
    key = (kernel, arch)
    if key not in cache:
        from . import sass

        try:
            cache[key] = (sass.sass_stats(kernel, arch=arch, nvrtc=NVRTC_MAJOR), None)
        except sass.SassUnavailable as exc:
            cache[key] = (None, str(exc))
    return cache[key]


def launch_row(case: _cases.Case, launch, blocks_by_prefix: Dict[str, int], gpu, stats,
               why: Optional[str]) -> Dict:
    """One row: the launch's counters joined with the kernel's SASS, occupancy and model."""
    flops, kind, bytes_min = _cases.launch_work(case, launch.kernel, launch.blocks_total,
                                                blocks_by_prefix)
    t = launch.totals()
    threads = launch.block[0] * launch.block[1] * launch.block[2]
    row = dict(op=case.op, variant=case.variant, kernel=launch.kernel, shape=case.shape,
               flops=flops, bytes_min=bytes_min, **t,
               registers=None, spill_bytes=None, static_smem=launch.static_smem,
               dynamic_smem=launch.dynamic_smem, occupancy=None, limiter=None, sass_mix=None,
               loop_ffma_fraction=None, compiler=None, gpu=gpu.name, modeled_us=None, bound=None)
    row.update(group=case.group, flop_kind=kind, grid=list(launch.grid), block=list(launch.block),
               blocks_total=launch.blocks_total, blocks_run=launch.blocks_run,
               counts="exact" if launch.exact else
               f"extrapolated from {launch.blocks_run} of {launch.blocks_total} blocks")
    if stats is None:
        row["unavailable"] = f"SASS, occupancy and model: {why}"
        return row
    row.update(registers=stats.registers, spill_bytes=stats.spill_bytes, sass_mix=stats.mix,
               loop_mix=stats.loop_mix, stack_bytes=stats.stack_bytes,
               loop_ffma_fraction=stats.loop_math_fraction,
               fastpath_ffma_fraction=stats.fastpath_math_fraction,
               loop_instr_per_math=stats.loop_instr_per_math,
               fastpath_instr_per_math=stats.fastpath_instr_per_math, compiler=stats.label,
               sass_static_smem=stats.static_smem)
    occ = _occ.occupancy(gpu.arch, threads, stats.registers, launch.static_smem,
                         launch.dynamic_smem)
    row.update(occupancy=occ.occupancy, limiter=occ.limiter,
               blocks_per_sm=occ.active_blocks_per_sm)
    if occ.active_blocks_per_sm == 0:
        row["unavailable"] = f"model: no block fits on an SM (limited by {occ.limiter})"
        return row
    m = _model.model(_model.Launch(
        grid_blocks=launch.blocks_total, threads_per_block=threads,
        registers_per_thread=stats.registers, static_smem=launch.static_smem,
        dynamic_smem=launch.dynamic_smem, flops=float(flops),
        flop_kind=kind, load_sectors=t["gld_sectors"], store_sectors=t["gst_sectors"],
        load_requests=t["gld_requests"], store_requests=t["gst_requests"],
        shared_wavefronts=t["lds_wavefronts"] + t["sts_wavefronts"],
        bytes_min=int(bytes_min), working_set_bytes=int(bytes_min)), gpu)
    row.update(modeled_us=m.modeled_us, bound=m.bound, modeled_terms_us=m.terms_us,
               headroom=m.headroom, waves=m.waves.waves, dram_rule=m.dram_rule)
    return row


def _failed(case: _cases.Case, exc: BaseException) -> Dict:
    return dict(op=case.op, variant=case.variant, shape=case.shape, group=case.group,
                status="failed", error={"type": type(exc).__name__, "message": str(exc)})


def analyze(ops: Optional[Sequence[str]] = None, sizes=None, variants=None, gpu: str = DEFAULT_GPU,
            sample_blocks: Optional[int] = DEFAULT_SAMPLE, progress: bool = False,
            skip_groups: Sequence[str] = ()) -> Dict:
    """Runs the cases (but those of ``skip_groups``) and returns ``{"meta": ..., "rows": [...]}``
    (one row per launch)."""
    g = _gpus.get_gpu(gpu)
    chosen = [c for c in _cases.cases(ops, sizes, variants) if c.group not in skip_groups]
    registry = _registry()
    sass_cache: Dict = {}
    rows: List[Dict] = []
    t0 = time.time()
    for i, case in enumerate(chosen, 1):
        if progress:
            print(f"\r[{i}/{len(chosen)}] {case.op} {case.variant} {case.shape}".ljust(79),
                  end="", file=sys.stderr, flush=True)
        try:
            with emu.count_memory(sample_blocks=sample_blocks) as rec:
                case.run("emulator")
        except Exception as exc:  # a failed case is a row; the run goes on
            rows.append(_failed(case, exc))
            continue
        by_prefix: Dict[str, int] = {}
        for launch in rec.launches:
            p = _cases.prefix_of(case, launch.kernel)
            if p is not None:
                by_prefix[p] = by_prefix.get(p, 0) + launch.blocks_total
        for launch in rec.launches:
            stats, why = _sass(registry.get(launch.kernel), g.arch.name, sass_cache)
            rows.append(dict(status="ok", **launch_row(case, launch, by_prefix, g, stats, why)))
    if progress:
        print("\r" + " " * 79 + "\r", end="", file=sys.stderr, flush=True)
    meta = dict(label=LABEL, gpu=g.name, arch=g.arch.name, sample_blocks=sample_blocks,
                expected_error=_model.EXPECTED_ERROR, seconds=round(time.time() - t0, 1))
    return {"meta": meta, "rows": rows}


# ---------------------------------------------------------------------------------------------
# Reporting
# ---------------------------------------------------------------------------------------------
def _ratio(a, b) -> Optional[float]:
    return a / b if b else None


def derived(row: Dict) -> Dict:
    """Per-request figures and the modeled throughput of a row (None where undefined)."""
    us = row.get("modeled_us")
    out = dict(
        gld_sectors_per_request=_ratio(row["gld_sectors"], row["gld_requests"]),
        gst_sectors_per_request=_ratio(row["gst_sectors"], row["gst_requests"]),
        lds_wavefronts_per_request=_ratio(row["lds_wavefronts"], row["lds_requests"]),
        modeled_tflops=(row["flops"] / us / 1e6) if us and row["flops"] else None,
        modeled_gbs=(row["bytes_min"] / us / 1e3) if us and row["bytes_min"] else None,
    )
    return out


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def format_table(doc: Dict) -> str:
    head = ("op", "variant", "kernel", "shape", "gld sec/req", "gst sec/req", "lds wf/req",
            "conflicts", "regs", "occ", "limiter", "loop FFMA", "modeled us", "modeled", "bound")
    lines = [head]
    for r in doc["rows"]:
        if r.get("status") != "ok":
            err = r["error"]
            lines.append((r["op"], r["variant"], "-", r["shape"], *["-"] * 10,
                          f"FAILED {err['type']}: {err['message'][:60]}"))
            continue
        d = derived(r)
        tput = (f"{d['modeled_tflops']:.1f} TFLOP/s" if d["modeled_tflops"] else
                f"{d['modeled_gbs']:.0f} GB/s" if d["modeled_gbs"] else "-")
        kernel = r["kernel"] if len(r["kernel"]) <= 34 else r["kernel"][:31] + "..."
        lines.append((r["op"], r["variant"], kernel, r["shape"],
                      _fmt(d["gld_sectors_per_request"], ".1f"),
                      _fmt(d["gst_sectors_per_request"], ".1f"),
                      _fmt(d["lds_wavefronts_per_request"], ".2f"), str(r["smem_bank_conflicts"]),
                      _fmt(r["registers"], "d"), _fmt(r["occupancy"], ".0%"), r["limiter"] or "-",
                      _fmt(r["loop_ffma_fraction"], ".0%"), _fmt(r["modeled_us"], ".1f"), tput,
                      r["bound"] or "-"))
    w = [max(len(l[i]) for l in lines) for i in range(len(head))]
    body = "\n".join("  ".join(c.ljust(w[i]) if i < 4 or i == len(head) - 1 else c.rjust(w[i])
                               for i, c in enumerate(l)).rstrip() for l in lines)
    meta = doc["meta"]
    notes = [f"pygpu-ops analyze: {meta['label']}.",
             f"GPU modeled: {meta['gpu']} ({meta['arch']}); counts per launch "
             + ("from every block" if not meta["sample_blocks"] else
                f"extrapolated from at most {meta['sample_blocks']} blocks (first and last "
                "included)") + "; SASS: " + (next((r["compiler"] for r in doc["rows"]
                                                  if r.get("compiler")), None) or "unavailable"),
             f"Expected error: {meta['expected_error']}"]
    return "\n".join(notes) + "\n" + body


def plot(doc: Dict, folder: str) -> List[str]:
    """One PNG per ladder (row group): modeled TFLOP/s (or GB/s) per step, and sectors per
    request and bank conflicts per step."""
    import os

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    os.makedirs(folder, exist_ok=True)
    rows = [r for r in doc["rows"] if r.get("status") == "ok"]
    written = []
    for group in dict.fromkeys(r["group"] for r in rows):
        sel = [r for r in rows if r["group"] == group and (r["flops"] or r["bytes_min"])]
        if not sel:
            continue
        labels = [f"{r['variant']}\n{r['kernel'].split('<')[0]}" if r["op"] != sel[0]["op"]
                  else r["variant"] for r in sel]
        labels = [f"{r['op']}\n{l}" if len({x['op'] for x in sel}) > 1 else l
                  for r, l in zip(sel, labels)]
        flops = any(r["flops"] for r in sel)
        d = [derived(r) for r in sel]
        perf = [(x["modeled_tflops"] if flops else x["modeled_gbs"]) or 0 for x in d]
        fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(max(6, 1.1 * len(sel)), 7), sharex=True)
        xs = range(len(sel))
        ax1.bar(xs, perf, color="tab:blue")
        ax1.set_ylabel(("TFLOP/s" if flops else "GB/s") + " (modeled)")
        ax1.set_title(f"{group}: modeled on {doc['meta']['gpu']}, not measured")
        ax1.grid(True, axis="y", alpha=0.3)
        spr = [x["gld_sectors_per_request"] or 0 for x in d]
        ax2.bar([x - 0.2 for x in xs], spr, width=0.4, label="global load sectors / request")
        ax2.set_ylabel("sectors / request")
        ax3 = ax2.twinx()
        ax3.bar([x + 0.2 for x in xs], [r["smem_bank_conflicts"] for r in sel], width=0.4,
                color="tab:red", label="shared bank conflicts")
        ax3.set_ylabel("bank conflicts (wavefronts)")
        ax2.set_xticks(list(xs), labels, rotation=30, fontsize=7, ha="right")
        h1, l1 = ax2.get_legend_handles_labels()
        h2, l2 = ax3.get_legend_handles_labels()
        ax2.legend(h1 + h2, l1 + l2, fontsize=7)
        path = os.path.join(folder, f"analyze_{group}.png")
        fig.savefig(path, dpi=110, bbox_inches="tight")
        plt.close(fig)
        written.append(path)
    return written


def add_arguments(p) -> None:
    p.add_argument("--ops", nargs="+", choices=sorted(_cases.PROVIDERS),
                   help="op families (default: all)")
    p.add_argument("--sizes", type=int, nargs="+", help="problem sizes (GEMM: M = N = K)")
    p.add_argument("--variants", nargs="+", help="variants (ladder steps) to analyse")
    p.add_argument("--gpu", default=DEFAULT_GPU,
                   help=f"GPU to model (default {DEFAULT_GPU}; one of {', '.join(_gpus.GPUS)})")
    p.add_argument("--sample-blocks", type=int, default=DEFAULT_SAMPLE,
                   help=f"blocks run per launch, counts extrapolated (default {DEFAULT_SAMPLE}; "
                        "0: every block, exact)")
    p.add_argument("--json", metavar="FILE", help="write the rows as JSON to FILE ('-': stdout)")
    p.add_argument("--plot", metavar="DIR", help="write one PNG per ladder into DIR")


def main(args) -> int:
    from ..bench import write_json

    if args.sample_blocks < 0:
        print("pygpu-ops analyze: --sample-blocks must be >= 0", file=sys.stderr)
        return 2
    doc = analyze(args.ops, args.sizes, args.variants, gpu=args.gpu,
                  sample_blocks=args.sample_blocks or None, progress=sys.stderr.isatty())
    if args.json != "-":
        print(format_table(doc))
    if args.json:
        write_json(doc, args.json)
    if args.plot:
        for path in plot(doc, args.plot):
            print(f"wrote {path}")
    return 1 if any(r.get("status") != "ok" for r in doc["rows"]) else 0
