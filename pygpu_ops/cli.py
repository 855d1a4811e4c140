"""The ``pygpu-ops`` command: info, check (offline compile gate), selftest, bench, analyze, run."""
from __future__ import annotations

import argparse
import json
import platform
import sys

from ._runtime import backends


def _cmd_info(args) -> int:
    import numpy as np

    from . import __version__

    print(f"pygpu_ops {__version__}")
    print(f"python    {platform.python_version()} ({sys.executable})")
    print(f"numpy     {np.__version__}")
    for name in backends.BACKENDS:
        why = backends.problem(name)
        print(f"backend   {name:9s} {'available' if why is None else 'unavailable: ' + why}")
    if backends.problem("cuda") is None:
        import cupy

        dev = cupy.cuda.Device()
        props = cupy.cuda.runtime.getDeviceProperties(dev.id)
        name = props["name"].decode() if isinstance(props["name"], bytes) else str(props["name"])
        print(f"cupy      {cupy.__version__}")
        print(f"device    {dev.id}: {name} (compute capability {props['major']}.{props['minor']})")
        try:
            from cupy.cuda import compiler

            print(f"cupy kernel cache  {compiler.get_cache_dir()}")
        except Exception:  # the cache location is informative only
            pass
    from ._runtime import cubin_cache

    print(f"kernel cache  {cubin_cache.describe()}")
    if backends.problem("emulator") is None:
        from ._runtime.emulator import cache_dir

        print(f"emulator cache  {cache_dir()}")
    try:
        from ._runtime.compile_gate import nvrtc_version

        print(f"nvrtc     {nvrtc_version()} (offline compile gate available)")
    except Exception as exc:
        print(f"nvrtc     unavailable: {exc}")
    return 0


def _cmd_check_sass(args) -> int:
    """``check --sass``: the SASS targets (pygpu_ops/analysis/targets.py) under each NVRTC."""
    from .analysis import sass, targets

    majors = args.nvrtc or [m for m in (12, 13) if sass.why_unavailable(m) is None] or [13]
    try:
        results = targets.check(majors, args.arch)
    except (sass.SassUnavailable, ValueError) as exc:
        print(f"pygpu-ops check --sass: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps([dict(kernel=r.kernel, arch=r.arch, compiler=r.compiler, ok=r.ok,
                               failures=r.failures, figures=r.figures, why=r.target.why)
                          for r in results], indent=1))
    else:
        for r in results:
            print(r.line())
    missed = [r for r in results if not r.ok]
    where = sys.stderr if args.json or missed else sys.stdout
    if missed:
        print(f"check --sass FAILED: {len(missed)} of {len(results)} SASS targets missed",
              file=where)
        return 1
    print(f"check --sass passed: {len(results)} SASS targets held "
          f"({len(targets.TARGETS)} kernels, NVRTC {', '.join(map(str, majors))})", file=where)
    return 0


def _cmd_check(args) -> int:
    from ._runtime import compile_gate

    if args.sass:
        return _cmd_check_sass(args)
    archs = args.arch or compile_gate.ARCHS
    try:
        import re

        from ._runtime.kernels import all_kernels

        pattern = re.compile(args.filter or "")
        chosen = [k for k in all_kernels() if pattern.search(k.name_expression) or pattern.search(k.source)]
        result = compile_gate.run_gate(chosen, archs=archs, nvrtc=args.nvrtc)
    except (compile_gate.GateUnavailable, ValueError) as exc:
        print(f"pygpu-ops check: {exc}", file=sys.stderr)
        return 2
    if args.json:
        print(json.dumps(compile_gate.as_json(result), indent=1))
    else:
        for version, path in result.nvrtc.items():
            print(f"NVRTC {version} ({path})")
        print(f"archs {', '.join(archs)}")
        for s in result.skipped:
            print(f"note: {s.message}")
        print(compile_gate.format_table(result.reports))
        for e in result.errors:
            print(f"\nCOMPILE ERROR {e.source} (NVRTC {e.nvrtc}, {e.arch}):\n{e.log}")
    versions = ", ".join(result.nvrtc)
    if result.errors or result.bad:
        print(f"check FAILED (NVRTC {versions}): {len(result.errors)} compile errors, "
              f"{len(result.bad)} kernels with forbidden spills", file=sys.stderr)
        return 1
    print(f"check passed (NVRTC {versions}): {len(result.reports)} kernel builds, no errors, no forbidden spills",
          file=sys.stderr if args.json else sys.stdout)   # --json: stdout is one JSON document
    return 0


def _cmd_selftest(args) -> int:
    from . import selftest

    names = args.backend or list(backends.available_backends())
    return selftest.run(names, verbose=not args.quiet)


def _cmd_bench(args) -> int:
    from . import bench

    return bench.main(args)


def _cmd_analyze(args) -> int:
    from .analysis import analyze

    return analyze.main(args)


def _cmd_run(args) -> int:
    from .ir import run

    return run.main(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="pygpu-ops", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("info", help="versions, device, backends, caches")
    s.set_defaults(func=_cmd_info)
    s = sub.add_parser("check", help="offline NVRTC compile of every kernel with the ptxas resource report")
    s.add_argument("--arch", action="append", help="sm_XX (repeatable; default sm_75 sm_80 sm_86 sm_89 sm_90)")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    s.add_argument("--filter", metavar="REGEX", help="only kernels whose name or source file matches")
    s.add_argument("--nvrtc", action="append", type=int, choices=(12, 13),
                   help="NVRTC major version to gate under (repeatable; default every one installed: "
                        "the nvrtc12 / nvrtc13 extras)")
    s.add_argument("--sass", action="store_true",
                   help="check the SASS targets instead (hot-loop math share, no local memory, "
                        "required instructions; pygpu_ops/analysis/targets.py; needs nvdisasm)")
    s.set_defaults(func=_cmd_check)
    s = sub.add_parser("selftest", help="every op on every available backend against the reference")
    s.add_argument("--backend", action="append", choices=backends.BACKENDS)
    s.add_argument("-q", "--quiet", action="store_true", help="print failures only")
    s.set_defaults(func=_cmd_selftest)
    s = sub.add_parser("bench", help="benchmark the kernels (the main job)")
    from . import bench

    bench.add_arguments(s)
    s.set_defaults(func=_cmd_bench)
    s = sub.add_parser("analyze", help="memory counters (emulator), SASS, occupancy and a modeled "
                                       "time per kernel launch, without a GPU")
    from .analysis import analyze

    analyze.add_arguments(s)
    s.set_defaults(func=_cmd_analyze)
    s = sub.add_parser("run", help="run an ONNX model through InferenceSession (--compare-ort, --profile)")
    from .ir import run

    run.add_arguments(s)
    s.set_defaults(func=_cmd_run)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
