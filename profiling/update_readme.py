#!/usr/bin/env python3
"""Regenerate the README's results tables: the newest GPU benchmark, the newest CPU benchmark
(the numpy backend against PyTorch on the CPU), and the analysis.

Reads the newest ``profiling/results/*.json`` written by ``pygpu-ops bench --json`` on a GPU
(see ``profiling/gpu_check.sh``) and replaces the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` in README.md. With no GPU results recorded, the table says
"not measured". The second table (between ``<!-- analysis:start -->`` and
``<!-- analysis:end -->``) is the newest ``profiling/results/analysis_*.json`` written by
``pygpu-ops analyze --json``: counts, SASS and modeled times, with the measured time and counters of
the newest ``ncu_*.json`` (``profiling/ncu_counters.py`` on a GPU) or GPU bench next to them and the
model's error where both exist. The third (between ``<!-- cpu:start -->`` and ``<!-- cpu:end -->``)
is the newest ``profiling/results/cpu_*.json``, a ``pygpu-ops bench --json`` run without a GPU,
filed with ``--add-cpu``: each op's numpy backend against its ``torch-cpu`` row, time and ratio.
Never edit those parts of the README by hand.

    python profiling/update_readme.py [--add bench.json] [--add-ncu ncu.json] [--add-cpu bench.json] [--check]

``--add`` first files a ``pygpu-ops bench --json`` output from a GPU run under
``profiling/results/<device>_<date>.json`` (commit that file). The table shows both times the
bench records, kernel time (a captured CUDA graph replayed between events) and op time (the
public call, synchronized), says which one the throughput comes from, and marks failed rows.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

START, END = "<!-- results:start -->", "<!-- results:end -->"
A_START, A_END = "<!-- analysis:start -->", "<!-- analysis:end -->"
ROOT = Path(__file__).resolve().parent.parent
C_START, C_END = "<!-- cpu:start -->", "<!-- cpu:end -->"
#: File name prefixes of the other recorded documents (not GPU bench runs).
ANALYSIS, NCU, CPU = "analysis_", "ncu_", "cpu_"


def newest(results_dir: Path):
    docs = []
    for path in sorted(results_dir.glob("*.json")):
        if path.name.startswith((ANALYSIS, NCU, CPU)):
            continue
        doc = json.loads(path.read_text())
        why = _schema_problem(doc)
        if why and doc.get("meta", {}).get("backend") == "cuda":
            raise SystemExit(f"{path}: {why}")
        if not why:
            docs.append((doc["meta"].get("date", ""), path.name, doc))
    return max(docs, key=lambda d: (d[0], d[1])) if docs else None


def _ms(v) -> str:
    return "-" if v is None else f"{v:.3f}"


def render(found) -> str:
    if found is None:
        return "No GPU benchmark has been recorded yet: every GPU figure is **not measured**."
    _, name, doc = found
    meta = doc["meta"]
    timing = meta.get("timing", {})
    lines = [f"Measured on {meta.get('device', '?')} (compute capability {meta.get('cc', '?')}), "
             f"{meta.get('date', '?')}, CuPy {meta.get('cupy', '?')}, median of {meta.get('repeats', '?')} "
             f"runs; from `profiling/results/{name}`."]
    if "copy" in meta:
        lines.append(f"Device-to-device copy in the same run: {meta['copy']['GB/s']:.0f} GB/s.")
    lines += ["",
              f"- **{timing.get('kernel') or 'kernel ms: not measured'}**; marked *events* where the call "
              f"could not be captured and CUDA events around the call were used instead (they also count "
              f"the GPU waiting for Python).",
              f"- **{timing.get('op', 'op ms: not recorded')}**.",
              f"- Throughput and % of vendor come from the **{timing.get('throughput_from', '?')} time**.",
              ""]
    if meta.get("interrupted") or meta.get("error"):
        why = meta.get("interrupted") or f"{meta['error']['type']}: {meta['error']['message']}"
        lines += [f"**This run did not finish ({why}): the rows below are the ones it measured.**", ""]
    lines += ["| op | dtype | variant | size | kernel ms | op ms | throughput | % of vendor | correct |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- |"]
    for r in doc["results"]:
        if r.get("status") != "ok":
            err = r.get("error", {})
            lines.append(f"| {r['op']} | {r['dtype']} | {r['variant']} | {r['size']} | - | - | - | - "
                         f"| **FAILED** ({err.get('type', '?')}) |")
            continue
        value = f"{r['value']:.2f} {r['unit']}" if r["unit"] in ("TFLOP/s", "TOPS") else f"{r['value']:.0f} {r['unit']}"
        pct = f"{r['pct_vendor']:.1f}%" if "pct_vendor" in r else "-"
        correct = "-" if "correct" not in r else ("yes" if r["correct"] else "**NO**")
        kernel = _ms(r["kernel_median_ms"])
        if r.get("kernel_method") == "events around the call":
            kernel += " *events*"
        lines.append(f"| {r['op']} | {r['dtype']} | {r['variant']} | {r['size']} | {kernel} "
                     f"| {_ms(r['op_median_ms'])} | {value} | {pct} | {correct} |")
    return "\n".join(lines)


def _schema_problem(doc) -> str:
    """Why ``doc`` is not a bench JSON this script can render ('' when it is)."""
    meta = doc.get("meta", {})
    if meta.get("backend") != "cuda":
        return f"not a GPU run (meta.backend is {meta.get('backend')!r})"
    if "timing" not in meta:
        return "no meta.timing: written by a pygpu-ops bench older than the kernel/op time split"
    for r in doc.get("results", []):
        if "status" not in r or (r["status"] == "ok" and not {"kernel_median_ms", "op_median_ms"} <= set(r)):
            return f"row {r.get('op')} {r.get('variant')} lacks status/kernel_median_ms/op_median_ms"
    return ""


def _newest_prefixed(results_dir: Path, prefix: str):
    found = []
    for path in sorted(results_dir.glob(f"{prefix}*.json")):
        doc = json.loads(path.read_text())
        found.append((doc.get("meta", {}).get("date", ""), path.name, doc))
    return max(found, key=lambda d: (d[0], d[1])) if found else None


def _gemm_n(shape: str):
    m = re.fullmatch(r"(\d+)x\1x\1", shape)
    return m.group(1) if m else None


def _measured(row, ncu_doc, bench_doc):
    """(measured us, source) for an analysis row: the ncu launch of the same case, else the bench's
    kernel time of the same single-launch GEMM case; (None, None) when neither was recorded."""
    if ncu_doc is not None:
        for r in ncu_doc.get("rows", []):
            if (r.get("op"), r.get("variant"), r.get("launch")) == (row["op"], row["variant"],
                                                                    row["launch"]):
                return r.get("time"), "ncu", r
    if bench_doc is not None and row["op"] == "gemm" and row["launches"] == 1:
        dtype = "float64" if row["kernel"].startswith("dgemm") else "float32"
        for r in bench_doc.get("results", []):
            if (r.get("op"), r.get("dtype"), r.get("variant"), r.get("size")) == \
                    ("gemm", dtype, row["variant"], _gemm_n(row["shape"])) and \
                    r.get("status") == "ok" and r.get("kernel_median_ms") is not None:
                return r["kernel_median_ms"] * 1e3, "bench", None
    return None, None, None


def _per(a, b, spec=".1f"):
    return "-" if not b else format(a / b, spec)


def render_analysis(results_dir: Path) -> str:
    """The analysis table: counts, SASS, occupancy and modeled time per launch (from the newest
    ``analysis_*.json``), with the measured time and counters next to them where a GPU run
    recorded them (``ncu_*.json``, else the bench), and the model's error."""
    found = _newest_prefixed(results_dir, ANALYSIS)
    if found is None:
        return ("No analysis recorded yet (`pygpu-ops analyze --json "
                "profiling/results/analysis_<gpu>.json`).")
    _, name, doc = found
    meta = doc["meta"]
    ncu = _newest_prefixed(results_dir, NCU)
    ncu_doc = ncu[2] if ncu and not ncu[2].get("meta", {}).get("unavailable") else None
    bench = newest(results_dir)
    bench_doc = bench[2] if bench else None
    compiler = next((r["compiler"] for r in doc["rows"] if r.get("compiler")), "unavailable")
    lines = [f"**Modeled, not measured** except the *measured* columns. From "
             f"`profiling/results/{name}` (`pygpu-ops analyze`, {meta.get('seconds', '?')} s on "
             f"the CPU): global sectors per request and shared wavefronts per request counted by "
             f"the emulator (per launch, "
             + ("every block" if not meta.get("sample_blocks") else
                f"extrapolated from at most {meta['sample_blocks']} blocks") +
             f"), registers and the hot loop's FFMA share from the SASS ({compiler}), occupancy "
             f"and time modeled for {meta['gpu']} ({meta['arch']}).",
             "",
             f"Expected error of the model: {meta.get('expected_error', '?')}",
             ""]
    if ncu_doc is None and bench_doc is None:
        lines += ["Measured: **not measured** (no GPU run recorded), so the model's error is "
                  "unknown.", ""]
    else:
        src = []
        if ncu_doc is not None:
            src.append(f"Nsight Compute ({ncu[1]}, {ncu_doc['meta'].get('device', '?')})")
        if bench_doc is not None:
            src.append(f"the bench's kernel time ({bench[1]})")
        lines += ["Measured columns from " + " and ".join(src) + "; error = (measured - "
                  "modeled) / measured.", ""]
    lines += [f"The SASS columns (registers, the hot loop's math share over the whole loop and over "
              f"its fast path, the steady-state iteration, and instructions per math instruction on "
              f"the fast path) are static counts of the cubin: SASS, {meta['arch']}, {compiler}.", "",
              "| op | variant | kernel | shape | gld sectors/req | lds wavefronts/req | bank "
              "conflicts | regs | occupancy | loop math share | fast-path math share | fast-path "
              "instr/math | modeled us | bound | measured us | model error | measured gld "
              "sectors/req | measured lds wavefronts/req |",
              "| --- | --- | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: "
              "| --- | ---: | ---: | ---: | ---: |"]
    rows = [r for r in doc["rows"] if r.get("status") == "ok"]
    launches, index = {}, {}
    for r in rows:
        key = (r["op"], r["variant"], r["shape"])
        launches[key] = launches.get(key, 0) + 1
    for r in rows:
        key = (r["op"], r["variant"], r["shape"])
        r = dict(r, launch=index.get(key, 0), launches=launches[key])
        index[key] = r["launch"] + 1
        meas, how, m = _measured(r, ncu_doc, bench_doc)
        occ = "-" if r["occupancy"] is None else f"{r['occupancy']:.0%} ({r['limiter']})"
        ffma = "-" if r["loop_ffma_fraction"] is None else f"{r['loop_ffma_fraction']:.1%}"
        fast = "-" if r.get("fastpath_ffma_fraction") is None else \
            f"{r['fastpath_ffma_fraction']:.1%}"
        ipm = "-" if r.get("fastpath_instr_per_math") is None else \
            f"{r['fastpath_instr_per_math']:.2f}"
        modeled = "-" if r["modeled_us"] is None else f"{r['modeled_us']:.1f}"
        err = "-" if meas is None or r["modeled_us"] is None or not meas else \
            f"{(meas - r['modeled_us']) / meas:+.0%}"
        lines.append(
            f"| {r['op']} | {r['variant']} | `{r['kernel']}` | {r['shape']} "
            f"| {_per(r['gld_sectors'], r['gld_requests'])} "
            f"| {_per(r['lds_wavefronts'], r['lds_requests'], '.2f')} | {r['smem_bank_conflicts']} "
            f"| {r['registers'] if r['registers'] is not None else '-'} | {occ} | {ffma} | {fast} "
            f"| {ipm} "
            f"| {modeled} | {r['bound'] or '-'} "
            f"| {'not measured' if meas is None else f'{meas:.1f} ({how})'} | {err} "
            f"| {'-' if m is None else _per(m.get('gld_sectors', 0), m.get('gld_requests', 0))} "
            f"| {'-' if m is None else _per(m.get('lds_wavefronts', 0), m.get('lds_requests', 0), '.2f')} |")
    return "\n".join(lines)


def render_cpu(results_dir: Path) -> str:
    """The newest CPU bench: per case, the numpy backend's median against the torch-cpu row of
    its group, the ratio (ours / torch-cpu, lower is better) and the peak memory one call adds."""
    found = _newest_prefixed(results_dir, CPU)
    if found is None:
        return "No CPU benchmark has been recorded yet."
    _, name, doc = found
    meta = doc["meta"]
    rows = doc.get("results", [])
    base = {r["group"]: r for r in rows if r.get("variant") == "torch-cpu" and r.get("status") == "ok"}
    lines = [f"Measured on {meta.get('device', '?')}, {meta.get('date', '?')}, {meta.get('threads', '?')} threads "
             f"both sides, NumPy {meta.get('numpy', '?')}, PyTorch {meta.get('torch', 'not installed')}; "
             f"median of {meta.get('repeats', '?')} calls, {meta.get('timing', {}).get('protocol', '')} "
             f"(`{name}`, `pygpu-ops bench --json`, filed with `profiling/update_readme.py --add-cpu`). "
             "Ratio: ours / torch-cpu, lower is better.", "",
             "| op | dtype | size | numpy backend ms | torch-cpu ms | ratio | peak MiB (traced) |",
             "| --- | --- | --- | ---: | ---: | ---: | ---: |"]
    worst = None
    for r in rows:
        if r.get("variant") != "numpy backend":
            continue
        b = base.get(r.get("group"))
        ours = r.get("op_median_ms") if r.get("status") == "ok" else None
        theirs = b.get("op_median_ms") if b else None
        ratio = ours / theirs if ours is not None and theirs else None
        if ratio is not None and (worst is None or ratio > worst[0]):
            worst = (ratio, f"{r['op']} {r['size']}")
        peak = r.get("peak_traced_bytes")
        lines.append(f"| {r['op']} | {r['dtype']} | {r['size']} | {_ms(ours) if ours is not None else r.get('status')} | "
                     f"{_ms(theirs)} | {'-' if ratio is None else f'{ratio:.2f}x'} | "
                     f"{'-' if peak is None else f'{peak / 2**20:.1f}'} |")
    if worst is not None:
        lines += ["", f"Worst ratio: {worst[0]:.2f}x ({worst[1]})."]
    return "\n".join(lines)


def add_cpu(path: Path, results_dir: Path) -> Path:
    doc = json.loads(path.read_text())
    if doc.get("meta", {}).get("backend") != "numpy":
        raise SystemExit(f"{path}: not a CPU run of pygpu-ops bench (meta.backend is not 'numpy'); nothing recorded")
    return _record(doc, results_dir, CPU)


def _replace(text: str, start: str, end: str, body: str, readme: Path) -> str:
    if start not in text or end not in text:
        raise SystemExit(f"{readme}: markers {start} / {end} not found")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def rendered(text: str, readme: Path, results_dir: Path) -> str:
    text = _replace(text, START, END, render(newest(results_dir)), readme)
    text = _replace(text, C_START, C_END, render_cpu(results_dir), readme)
    return _replace(text, A_START, A_END, render_analysis(results_dir), readme)


def update(readme: Path, results_dir: Path) -> bool:
    text = readme.read_text()
    new = rendered(text, readme, results_dir)
    changed = new != text
    readme.write_text(new)
    return changed


def add(path: Path, results_dir: Path) -> Path:
    doc = json.loads(path.read_text())
    why = _schema_problem(doc)
    if why:
        raise SystemExit(f"{path}: {why}; nothing recorded")
    return _record(doc, results_dir, "")


def add_ncu(path: Path, results_dir: Path) -> Path:
    doc = json.loads(path.read_text())
    if doc.get("meta", {}).get("tool") != "ncu":
        raise SystemExit(f"{path}: not written by profiling/ncu_counters.py; nothing recorded")
    return _record(doc, results_dir, NCU)


def _record(doc, results_dir: Path, prefix: str) -> Path:
    """Files ``doc`` as ``results_dir/<prefix><device>_<date>.json``."""
    meta = doc.get("meta", {})
    stem = re.sub(r"[^A-Za-z0-9]+", "_", f"{meta.get('device', 'gpu')}_{meta.get('date', '')}").strip("_")
    dest = results_dir / f"{prefix}{stem}.json"
    results_dir.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=1) + "\n")
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--results", type=Path, default=ROOT / "profiling" / "results")
    p.add_argument("--check", action="store_true", help="exit 1 if the README is not up to date")
    p.add_argument("--add", type=Path, metavar="BENCH_JSON", help="record a GPU bench JSON first")
    p.add_argument("--add-ncu", type=Path, metavar="NCU_JSON",
                   help="record profiling/ncu_counters.py's JSON from a GPU run first")
    p.add_argument("--add-cpu", type=Path, metavar="BENCH_JSON",
                   help="record a pygpu-ops bench JSON from a run without a GPU first")
    args = p.parse_args(argv)
    if args.add_cpu:
        print(f"recorded {add_cpu(args.add_cpu, args.results)}")
    if args.add:
        print(f"recorded {add(args.add, args.results)}")
    if args.add_ncu:
        print(f"recorded {add_ncu(args.add_ncu, args.results)}")
    if args.check:
        text = args.readme.read_text()
        ok = rendered(text, args.readme, args.results) == text
        print("README results tables are up to date" if ok else "README results tables are stale: run profiling/update_readme.py")
        return 0 if ok else 1
    print("README updated" if update(args.readme, args.results) else "README already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
