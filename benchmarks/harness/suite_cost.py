"""The ``cost`` suite: `cost_model.py` splits one step's cost into its parts, 1,000 no-op
steps in memory (dagloop and in_process) and on SQLite (dagloop); the method is in
docs/performance.md."""

from __future__ import annotations

import json
import os
from typing import Any

from harness.context import Ctx
from harness.scripts import RESULTS, run_script


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
        error = run_script(ctx, args, 1800)
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
            f"cost: one step's cost, {case['instance']}, N={case['n']}, "
            f"S={case['sleep']:g}, median of {case['repeats']} (docs/performance.md){spread}"
        )
        out.append((title, header, rows))
    return out
