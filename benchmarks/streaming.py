"""Streaming fan-out against the same run without it, alternating, in one
process, each run on a fresh SQLite instance.

* ``slow producer``: 100 items, one every 0.1 s; each mapped step takes 0.5 s, at most 5
  at once. Without streaming the run takes about P + C (10 s + 10 s); the ideal is
  max(P, C) (about 10 s). Reported: the wall ratio streaming / not streaming, and how long
  after the producer's first output the first mapped step started.
* ``many items`` (10,000): an instant producer and no-op mapped steps (limit 10,000): the cost
  of streaming's per-output resolution, as the run process's CPU per step against the
  same run without streaming.

Writes ``benchmarks/results/streaming_runs.json``; the ``streaming`` suite of ``make
bench`` runs this script and turns the result into its table and targets.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))

import dagster as dg  # noqa: E402
from harness.meta import git_info, machine, versions  # noqa: E402
from jobs import streaming as jobs  # noqa: E402

E = dg.DagsterEventType
CASES = {
    "slow producer": {"items": 100, "interval": 0.1, "work_s": 0.5, "limit": 5},
    "many items": {"items": 10_000, "interval": 0.0, "work_s": 0.0, "limit": 10_000},
}


def _cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def one_run(stream: bool, params: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="dagloop-streaming-") as home:
        (Path(home) / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_config(home) as instance:
            config = jobs.run_config(stream, **params)
            cpu, started = _cpu_seconds(), time.monotonic()
            result = dg.execute_job(
                dg.reconstructable(jobs.streaming_fan_out), instance=instance, run_config=config
            )
            wall, cpu = time.monotonic() - started, _cpu_seconds() - cpu
            first_output = min(
                r.timestamp for r in instance.all_logs(result.run_id, of_type=E.STEP_OUTPUT)
            )
            first_mapped = min(
                r.timestamp
                for r in instance.all_logs(result.run_id, of_type=E.STEP_START)
                if r.step_key and r.step_key.startswith("work[")
            )
            successes = len(instance.all_logs(result.run_id, of_type=E.STEP_SUCCESS))
    return {
        "stream": stream,
        "success": result.success,
        "steps_succeeded": successes,
        "wall_s": round(wall, 3),
        "cpu_s": round(cpu, 3),
        "first_mapped_after_first_output_s": round(first_mapped - first_output, 3),
        "loadavg_1min": round(os.getloadavg()[0], 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--large-items", type=int, default=10_000)
    parser.add_argument("--out", default=str(BENCH / "results" / "streaming_runs.json"))
    args = parser.parse_args()
    CASES["many items"]["items"] = args.large_items
    cases = []
    for name in args.cases.split(","):
        params = CASES[name]
        runs: dict[str, list[dict[str, Any]]] = {"streaming": [], "not streaming": []}
        for index in range(args.repeats):
            # Alternate which goes first, so neither always runs on a warmer process.
            order = [True, False] if index % 2 == 0 else [False, True]
            for stream in order:
                run = one_run(stream, params)
                runs["streaming" if stream else "not streaming"].append(run)
                print(f"{name}: {'streaming' if stream else 'not streaming'} {run}", flush=True)
        cases.append({"case": name, "params": params, "runs": runs, **_summary(runs, params)})
    result = {
        "benchmark": "streaming_runs",
        "git": git_info(str(BENCH.parent)),
        "versions": versions(),
        "machine": machine(),
        "repeats": args.repeats,
        "cases": cases,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n", encoding="utf8")


def _summary(runs: dict[str, list[dict[str, Any]]], params: dict[str, Any]) -> dict[str, Any]:
    def median(key: str, mode: str) -> float:
        return statistics.median(r[key] for r in runs[mode])

    items = params["items"]
    return {
        "all_succeeded": all(r["success"] for rs in runs.values() for r in rs),
        "wall_streaming_s": median("wall_s", "streaming"),
        "wall_not_streaming_s": median("wall_s", "not streaming"),
        "wall_ratio": round(median("wall_s", "streaming") / median("wall_s", "not streaming"), 3),
        "cpu_ms_per_step_streaming": round(1000 * median("cpu_s", "streaming") / items, 3),
        "cpu_ms_per_step_not_streaming": round(1000 * median("cpu_s", "not streaming") / items, 3),
        "cpu_ratio": round(median("cpu_s", "streaming") / median("cpu_s", "not streaming"), 3),
        "first_mapped_after_first_output_s": median(
            "first_mapped_after_first_output_s", "streaming"
        ),
    }


if __name__ == "__main__":
    main()
