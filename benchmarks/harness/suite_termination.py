"""The ``termination`` suite: `termination.py` measures the time to CANCELED, to the last
stored entry and to the process's exit after a termination request, and what a SIGKILL
loses (the event log's loss window, target <= 10 ms)."""

from __future__ import annotations

import json
import os
from typing import Any

from harness.context import Ctx
from harness.scripts import RESULTS, run_script
from harness.targets import target


def termination_suite(ctx: Ctx) -> dict[str, Any]:
    repeats = ctx.repeats or (1 if ctx.quick else 3)
    ctx.log(f"[termination] {repeats} round(s)")
    error = run_script(ctx, ["termination.py", "--repeats", str(repeats)], 1800)
    path = os.path.join(RESULTS, "termination.json")
    data: dict[str, Any] = {}
    if error is None and os.path.exists(path):
        with open(path) as f:
            data = json.load(f)
    kills = data.get("sigkill", [])
    window = max((k["oldest_lost_ms"] for k in kills), default=None)
    return {
        "suite": "termination",
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
        f"termination: median of {res['params']['repeats']}, measured from the "
        "termination request (CANCELING + SIGTERM)"
    )
    return [(title, header, rows)]
