"""The ``streaming`` suite: `streaming.py` — a streaming fan-out against the
same run without streaming, alternating, medians of 3, each run on a fresh SQLite
instance. Targets: wall ratio of the slow-producer case <= 0.65, its first mapped step
started <= 0.5 s after the producer's first output (in both cases: the 10,000-item
producer never awaits), and the run process's CPU per step at 10,000 items <= 1.1x the run
without streaming."""

from __future__ import annotations

import json
import os
from typing import Any

from harness.context import Ctx
from harness.scripts import RESULTS, run_script
from harness.targets import target


def streaming_suite(ctx: Ctx) -> dict[str, Any]:
    repeats = ctx.repeats or (1 if ctx.quick else 3)
    large = 1000 if ctx.quick else 10_000
    ctx.log(f"[streaming] {repeats} round(s), slow producer and {large:,} items")
    error = run_script(
        ctx, ["streaming.py", "--repeats", str(repeats), "--large-items", str(large)], 3600
    )
    path = os.path.join(RESULTS, "streaming_runs.json")
    cases: list[dict[str, Any]] = []
    if error is None and os.path.exists(path):
        with open(path) as f:
            cases = json.load(f).get("cases", [])
    by_name = {c["case"]: c for c in cases}
    slow, many = by_name.get("slow producer", {}), by_name.get("many items", {})
    note = error or ""
    return {
        "suite": "streaming",
        "params": {"repeats": repeats, "large_items": large, "instance": "sqlite"},
        "cases": cases,
        "error": error,
        "targets": [
            target(
                "streaming.ratio",
                "slow producer: wall streaming / not streaming",
                slow.get("wall_ratio"),
                0.65,
                note,
                row="100 items, 0.1 s apart; 0.5 s mapped, limit 5",
                col="wall ratio",
            ),
            target(
                "streaming.first_start",
                "slow producer: first mapped step's start after the first output (s)",
                slow.get("first_mapped_after_first_output_s"),
                0.5,
                note,
                row="100 items, 0.1 s apart; 0.5 s mapped, limit 5",
                col="first mapped start (s)",
            ),
            target(
                "streaming.cost_per_step",
                f"{large:,} items: run-process CPU per step, streaming / not streaming",
                many.get("cpu_ratio"),
                1.1,
                note,
                row=f"{large:,} items, instant producer, no-op mapped steps",
                col="CPU per step ratio",
            ),
            target(
                "streaming.first_start_large",
                f"{large:,} items: first mapped step's start after the first output (s)",
                many.get("first_mapped_after_first_output_s"),
                0.5,
                note,
                row=f"{large:,} items, instant producer, no-op mapped steps",
                col="first mapped start (s)",
            ),
        ],
    }


def rows_streaming(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    header = [
        "case",
        "wall streaming",
        "wall not streaming",
        "ratio",
        "CPU ms/step (on / off)",
        "first mapped start",
    ]
    rows = []
    for c in res["cases"]:
        rows.append(
            [
                c["case"],
                f"{c['wall_streaming_s']:.1f} s",
                f"{c['wall_not_streaming_s']:.1f} s",
                f"{c['wall_ratio']:.3f}",
                f"{c['cpu_ms_per_step_streaming']:.2f} / {c['cpu_ms_per_step_not_streaming']:.2f}",
                f"{c['first_mapped_after_first_output_s']:.2f} s after the first output",
            ]
        )
    title = (
        f"streaming: fan-out with and without streaming, alternating, median of "
        f"{res['params']['repeats']}, fresh SQLite instance per run"
    )
    return [(title, header, rows)]
