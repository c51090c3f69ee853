"""dagloop benchmarks: ``python run.py [--quick] [--suite scale,cost,fanout,...]``.

Run through ``make bench`` / ``make bench-quick`` (from the repository root), which build
the benchmark environment in ``benchmarks/.venv`` first. See benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from harness import meta, report
from harness.proc import BENCH_DIR
from harness.suites import (
    INSTANCES,
    MERGEABLE,
    NEEDS_PG,
    SUITES,
    can_merge,
    context,
    merge_cases,
    merge_instances,
    now,
)
from rich.console import Console


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument(
        "--quick",
        action="store_true",
        help="small N, ephemeral instance only (dask suite: N=100, S=1, ephemeral and "
        "SQLite), fewer repeats",
    )
    ap.add_argument(
        "--suite", default=",".join(SUITES), help=f"comma-separated subset of {', '.join(SUITES)}"
    )
    ap.add_argument(
        "--instances",
        default=None,
        help="Dagster suites only (fanout and hosting in full mode, dask always): "
        "comma-separated subset of ephemeral,sqlite,postgres; their cases replace those of "
        "an existing results file of the same mode (for dask: and the same N and S)",
    )
    ap.add_argument(
        "--n", type=int, default=None, help="dask suites: mapped steps N; scaleout: the large N"
    )
    ap.add_argument(
        "--sleep", type=float, default=None, help="dask suite: seconds per step S (not dask_cpu)"
    )
    ap.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="dask and scaleout suites: runs of every case (rounds)",
    )
    ap.add_argument(
        "--headline",
        action="store_true",
        help="fanout suite: only the cases behind its targets (dagloop and "
        "dagster-async-executor, S=3, N=300 (3 runs) and 1000); they replace the same cases of "
        "the existing fanout.json, whose other cases and c0 (lower bound) are kept",
    )
    ap.add_argument(
        "--results", default=os.path.join(BENCH_DIR, "results"), help="output directory"
    )
    ap.add_argument(
        "--command", default=None, help="command line to record as having produced the results"
    )
    args = ap.parse_args(argv)

    suites = [s.strip() for s in args.suite.split(",") if s.strip()]
    unknown = [s for s in suites if s not in SUITES]
    if unknown:
        ap.error(f"unknown suite(s): {', '.join(unknown)}")
    console = Console(width=200)
    command = args.command or "benchmarks/.venv/bin/python benchmarks/run.py " + " ".join(
        argv if argv is not None else sys.argv[1:]
    )
    instances = [i.strip() for i in args.instances.split(",")] if args.instances else None
    if instances and not set(instances) <= set(INSTANCES):
        ap.error(f"--instances: choose from {', '.join(INSTANCES)}")
    need_pg = any(NEEDS_PG[s](args.quick, instances) for s in suites)
    base = {
        "mode": "quick" if args.quick else "full",
        "command": command,
        "machine": meta.machine(),
        "versions": meta.versions(),
        "git": meta.git_info(os.path.dirname(BENCH_DIR)),
    }
    with context(args.quick, need_pg, lambda m: console.print(m, highlight=False)) as ctx:
        ctx.instances = instances
        ctx.n, ctx.sleep, ctx.repeats = args.n, args.sleep, args.repeats
        ctx.headline = args.headline
        if ctx.pg is not None:
            base["versions"]["postgresql"] = ctx.pg.version()
        for s in suites:
            t0 = time.monotonic()
            started = now()
            load_start = [round(x, 2) for x in os.getloadavg()]
            res = SUITES[s](ctx)
            res = {**base, "started": started, "duration_s": round(time.monotonic() - t0, 1), **res}
            res["machine"] = {
                **base["machine"],
                "loadavg_start": load_start,
                "loadavg_end": [round(x, 2) for x in os.getloadavg()],
            }
            old_path = os.path.join(args.results, f"{s}.json")
            if s == "fanout" and args.headline and os.path.exists(old_path):
                with open(old_path) as f:
                    old = json.load(f)
                if can_merge(old, res):
                    res = merge_cases(old, res)
            elif instances and s in MERGEABLE and os.path.exists(old_path):
                with open(old_path) as f:
                    old = json.load(f)
                if can_merge(old, res):
                    res = merge_instances(old, res)
            path = report.write_json(res, args.results)
            report.print_suite(res, console)
            console.print(f"wrote {os.path.relpath(path)}")
    results = report.load_all(args.results)
    console.print(f"wrote {os.path.relpath(report.write_summary(results, args.results))}")
    png = report.write_plot(results, args.results)
    if png:
        console.print(f"wrote {os.path.relpath(png)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
