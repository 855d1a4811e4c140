#!/usr/bin/env python3
"""Regenerate the README's results table from the newest recorded GPU benchmark.

Reads the newest ``profiling/results/*.json`` written by ``pygpu-ops bench --json`` on a GPU
(see ``profiling/gpu_check.sh``) and replaces the text between ``<!-- results:start -->`` and
``<!-- results:end -->`` in README.md. With no GPU results recorded, the table says
"not measured". Never edit that part of the README by hand.

    python profiling/update_readme.py [--add bench.json] [--check]

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
ROOT = Path(__file__).resolve().parent.parent


def newest(results_dir: Path):
    docs = []
    for path in sorted(results_dir.glob("*.json")):
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


def update(readme: Path, results_dir: Path) -> bool:
    text = readme.read_text()
    if START not in text or END not in text:
        raise SystemExit(f"{readme}: markers {START} / {END} not found")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    new = f"{head}{START}\n{render(newest(results_dir))}\n{END}{tail}"
    changed = new != text
    readme.write_text(new)
    return changed


def add(path: Path, results_dir: Path) -> Path:
    doc = json.loads(path.read_text())
    meta = doc.get("meta", {})
    why = _schema_problem(doc)
    if why:
        raise SystemExit(f"{path}: {why}; nothing recorded")
    stem = re.sub(r"[^A-Za-z0-9]+", "_", f"{meta.get('device', 'gpu')}_{meta.get('date', '')}").strip("_")
    dest = results_dir / f"{stem}.json"
    results_dir.mkdir(parents=True, exist_ok=True)
    dest.write_text(json.dumps(doc, indent=1) + "\n")
    return dest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--readme", type=Path, default=ROOT / "README.md")
    p.add_argument("--results", type=Path, default=ROOT / "profiling" / "results")
    p.add_argument("--check", action="store_true", help="exit 1 if the README is not up to date")
    p.add_argument("--add", type=Path, metavar="BENCH_JSON", help="record a GPU bench JSON first")
    args = p.parse_args(argv)
    if args.add:
        print(f"recorded {add(args.add, args.results)}")
    if args.check:
        text = args.readme.read_text()
        head, rest = text.split(START, 1)
        current = rest.split(END, 1)[0].strip()
        ok = current == render(newest(args.results)).strip()
        print("README results table is up to date" if ok else "README results table is stale: run profiling/update_readme.py")
        return 0 if ok else 1
    print("README updated" if update(args.readme, args.results) else "README already up to date")
    return 0


if __name__ == "__main__":
    sys.exit(main())
