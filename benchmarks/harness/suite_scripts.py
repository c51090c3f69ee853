"""Suites whose measurements live in a script of their own (runnable alone), run here so
that `make bench` regenerates their tables from the same commit as every other one.

* `cost` (issue 19): `cost_model.py` — one step's cost split into its parts, 1,000 no-op
  steps in memory (dagloop and in_process) and on SQLite (dagloop) (docs/performance.md).
* `termination` (issue 13): `termination.py` — time to CANCELED, to the last entry and to
  the process's exit after a termination request, and what a SIGKILL loses (the event
  log's loss window, target <= 10 ms).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from harness.context import Ctx
from harness.proc import BENCH_DIR
from harness.targets import target

RESULTS = os.path.join(BENCH_DIR, "results")


def _run_script(ctx: Ctx, args: list[str], timeout: float) -> str | None:
    """Run a benchmark script with this interpreter; None, or why it failed."""
    ctx.log(f"  {' '.join(args)}")
    try:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=BENCH_DIR,
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:.0f} s"
    if done.returncode != 0:
        return f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"[:300]
    return None


def cost_suite(ctx: Ctx) -> dict[str, Any]:
    repeats = ctx.repeats or (1 if ctx.quick else 3)
    instances = ["ephemeral"] if ctx.quick else ["ephemeral", "sqlite"]
    path = os.path.join(RESULTS, "cost_model.json")
    errors = {}
    for instance in instances:
        ctx.log(f"[cost] {instance}, N=1000, S=0, {repeats} round(s)")
        args = ["cost_model.py", "--instance", instance, "--n", "1000", "--repeats", str(repeats)]
        if instance != "ephemeral":
            # in_process fsyncs every entry on SQLite (minutes per run here): dagloop only.
            args += ["--executors", "dagloop"]
        error = _run_script(ctx, args, 1800)
        if error:
            errors[instance] = error
    cases = []
    if os.path.exists(path):
        with open(path) as f:
            cases = [
                c
                for c in json.load(f).get("cases", [])
                if c["instance"] in instances and c["n"] == 1000 and c["sleep"] == 0
            ]
    return {
        "suite": "cost",
        "issue": 19,
        "params": {"instances": instances, "n": 1000, "sleep": 0.0, "repeats": repeats},
        "cases": cases,
        "errors": errors,
        "targets": [],
    }


def rows_cost(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    out = []
    for case in res["cases"]:
        models = {k: v for k, v in case["executors"].items() if v.get("ok")}
        if not models:
            continue
        names = list(models)
        header = ["ms per step", *names]
        rows = [["wall", *[f"{models[n]['ms_per_step']:.2f}" for n in names]]]
        first = next(iter(models.values()))
        for row in first["rows_ms_per_step"]:
            rows.append([row, *[f"{models[n]['rows_ms_per_step'].get(row, 0):.2f}" for n in names]])
        threads = sorted({t for m in models.values() for t in m["other_threads_cpu_ms_per_step"]})
        for t in threads:
            cells = [f"{models[n]['other_threads_cpu_ms_per_step'].get(t, 0):.2f}" for n in names]
            rows.append([f"CPU of thread {t}", *cells])
        load = [x for m in models.values() for pair in m["loadavg_1min"] for x in pair or []]
        spread = f"; 1-min load {min(load):.1f}-{max(load):.1f}" if load else ""
        title = (
            f"cost (issue 19): one step's cost, {case['instance']}, N={case['n']}, "
            f"S={case['sleep']:g}, median of {case['repeats']} (docs/performance.md){spread}"
        )
        out.append((title, header, rows))
    return out


def termination_suite(ctx: Ctx) -> dict[str, Any]:
    repeats = ctx.repeats or (1 if ctx.quick else 3)
    ctx.log(f"[termination] {repeats} round(s)")
    error = _run_script(ctx, ["termination.py", "--repeats", str(repeats)], 1800)
    path = os.path.join(RESULTS, "termination.json")
    data: dict[str, Any] = {}
    if error is None and os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    kills = data.get("sigkill", [])
    window = max((k["oldest_lost_ms"] for k in kills), default=None)
    return {
        "suite": "termination",
        "issue": 13,
        "params": {"repeats": repeats, "instance": "sqlite (CLI run, fresh DAGSTER_HOME)"},
        "cases": data.get("cases", []),
        "sigkill": kills,
        "error": error,
        "targets": [
            target(
                "termination.sigkill_window",
                "SIGKILL: age of the oldest success lost (ms)",
                window,
                10.0,
                error or "",
                row="SIGKILL mid-run",
                col="loss window ms",
            )
        ],
    }


def rows_termination(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    header = ["job", "executor", "CANCELED", "last entry", "exit", "status"]
    rows = [
        [
            c["job"],
            c["executor"],
            f"{c['to_status']:.2f} s",
            f"{c['to_last_entry']:.2f} s",
            f"{c['to_exit']:.2f} s",
            ", ".join(c["statuses"]),
        ]
        for c in res["cases"]
    ]
    for kill in res.get("sigkill", []):
        rows.append(
            [
                "SIGKILL",
                "dagloop",
                f"{kill['successes_stored']} stored",
                f"{kill['successes_lost']} lost",
                f"oldest {kill['oldest_lost_ms']} ms",
                "",
            ]
        )
    title = (
        f"termination (issue 13): median of {res['params']['repeats']}, measured from the "
        "termination request (CANCELING + SIGTERM)"
    )
    return [(title, header, rows)]
