"""The ``storage`` suite: the run's event log batched on PostgreSQL and in memory.

The ``fanout --headline`` cases per storage, every executor in each round and the order
alternated round by round (drift and other load hit every executor alike), medians:

* fan-out N = 300, S = 3: dagloop vs dagster-async-executor;
* N = 300 no-op steps (S = 0): dagloop vs in_process vs dagster-async-executor;
* on persistent storages, dagloop's Dask mode (2 worker processes) with
  ``events_written_by: run`` vs ``workers`` at N = 300, S = 0 (what ``auto`` should be).

``python run.py --suite storage [--instances postgres,ephemeral,sqlite] [--repeats 3]``
"""

from __future__ import annotations

import os
from typing import Any

from harness.context import Ctx
from harness.dagster_runs import merge_repeats, run_dagster_case
from harness.executors import EXECUTORS
from harness.targets import target

N = 300
#: (S, executors compared) per storage; the first executor is dagloop.
SHAPES: list[tuple[float, list[str]]] = [
    (3.0, ["dagloop", "dagster_async_executor"]),
    (0.0, ["dagloop", "in_process", "dagster_async_executor"]),
]
DASK_WRITERS = ["dagloop_dask2_run", "dagloop_dask2_workers"]
DEFAULT_INSTANCES = ["postgres", "ephemeral"]


def _rotated(items: list[str], round_: int) -> list[str]:
    k = round_ % len(items)
    order = items[k:] + items[:k]
    return order if round_ % 2 == 0 else order[::-1]


def storage_suite(ctx: Ctx) -> dict[str, Any]:
    instances = ctx.instances or DEFAULT_INSTANCES
    repeats = ctx.repeats or 2
    runs: list[dict[str, Any]] = []
    for instance in instances:
        ctx.log(f"[storage] instance={instance}, {repeats} round(s)")
        for round_ in range(repeats):
            for sleep, executors in SHAPES:
                for ex in _rotated(executors, round_):
                    runs.append({**run_dagster_case(ctx, ex, instance, N, sleep), "round": round_})
            if instance != "ephemeral":  # Dask mode needs a persistent instance
                for ex in _rotated(DASK_WRITERS, round_):
                    case = run_dagster_case(
                        ctx, ex, instance, N, 0.0, job_kwargs={"placement_local": True}
                    )
                    runs.append({**case, "round": round_})
    cases = merge_repeats(runs)
    _add_ratios(cases)
    return {
        "suite": "storage",
        "params": {
            "instances": instances,
            "n": N,
            "shapes": [{"sleep": s, "executors": e} for s, e in SHAPES],
            "dask_writers": {k: EXECUTORS[k].config for k in DASK_WRITERS},
            "repeats": repeats,
            "order": "every executor each round; order rotated and reversed round by round",
            "statistic": "median wall of the successful runs; all walls kept in 'walls'",
        },
        "executors": {k: EXECUTORS[k].label for k in dict.fromkeys(_all_executors())},
        "cases": cases,
        "targets": _targets(cases, instances),
        "loadavg_during": [r.get("loadavg_1min") for r in runs],
    }


def _all_executors() -> list[str]:
    return [ex for _, exs in SHAPES for ex in exs] + DASK_WRITERS


def _by(cases: list[dict[str, Any]]) -> dict[tuple[str, str, float], dict[str, Any]]:
    return {(c["executor"], c["instance"], c["sleep"]): c for c in cases}


def _ratio(a: dict[str, Any] | None, b: dict[str, Any] | None) -> float | None:
    if a is None or b is None or not a.get("ok") or not b.get("ok"):
        return None
    return round(a["wall"] / b["wall"], 3)


def _add_ratios(cases: list[dict[str, Any]]) -> None:
    by = _by(cases)
    for c in cases:
        for ref in ("dagster_async_executor", "in_process"):
            r = _ratio(c, by.get((ref, c["instance"], c["sleep"])))
            if r is not None and c["executor"] != ref:
                c[f"ratio_{ref}"] = r


def _targets(cases: list[dict[str, Any]], instances: list[str]) -> list[dict[str, Any]]:
    """The targets (PostgreSQL S=3 vs d-a-e; PostgreSQL and ephemeral S=0 vs
    in_process: <= 0.6), its moonshot (<= 0.5 on every storage, both shapes), and whether
    the run's writer pays for Dask (run / workers <= 1)."""
    by = _by(cases)
    label = {"postgres": "PostgreSQL", "ephemeral": "ephemeral", "sqlite": "SQLite"}
    out = []
    for inst in instances:
        row = f"{label.get(inst, inst)} N={N}"
        s3 = _ratio(by.get(("dagloop", inst, 3.0)), by.get(("dagster_async_executor", inst, 3.0)))
        s0 = _ratio(by.get(("dagloop", inst, 0.0)), by.get(("in_process", inst, 0.0)))
        checks = []
        if inst == "postgres":
            checks.append(("s3", "S=3: dagloop / dagster-async-executor", s3, 0.6, "S=3 / d-a-e"))
        if inst in ("postgres", "ephemeral"):
            checks.append(("s0", "no-op steps: dagloop / in_process", s0, 0.6, "S=0 / in_process"))
        checks += [
            ("s3.moonshot", "moonshot, S=3: dagloop / d-a-e", s3, 0.5, "moonshot S=3 / d-a-e"),
            (
                "s0.moonshot",
                "moonshot, S=0: dagloop / in_process",
                s0,
                0.5,
                "moonshot S=0 / in_proc",
            ),
        ]
        if inst != "ephemeral":
            dask = _ratio(
                by.get(("dagloop_dask2_run", inst, 0.0)),
                by.get(("dagloop_dask2_workers", inst, 0.0)),
            )
            checks.append(
                (
                    "dask_run",
                    "Dask, S=0: events_written_by run / workers",
                    dask,
                    1.0,
                    "Dask run / workers",
                )
            )
        for suffix, desc, value, limit, col in checks:
            out.append(target(f"storage.{inst}.{suffix}", desc, value, limit, row=row, col=col))
    return out


def rows_storage(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table: a row per (storage, S), a column per executor (median, every run)."""
    labels = res["executors"]
    execs = list(labels)
    by = _by(res["cases"])
    header = ["storage", "S", *[labels[e] for e in execs], "dagloop / d-a-e", "dagloop / in_proc"]
    rows = []
    keys = sorted({(c["instance"], c["sleep"]) for c in res["cases"]}, key=lambda k: (k[0], -k[1]))
    for inst, sleep in keys:
        row = [inst, f"{sleep:g}"]
        for e in execs:
            c = by.get((e, inst, sleep))
            row.append(_fmt(c))
        dagloop = by.get(("dagloop", inst, sleep), {})
        for ref in ("dagster_async_executor", "in_process"):
            r = dagloop.get(f"ratio_{ref}")
            row.append(f"{r:.2f}" if r is not None else "-")
        rows.append(row)
    load = [x for x in res.get("loadavg_during", []) if x is not None]
    spread = f"; 1-min load {min(load):.1f}-{max(load):.1f}" if load else ""
    title = (
        f"storage: fan-out N={res['params']['n']}, median wall of "
        f"{res['params']['repeats']} alternating rounds (every run in brackets), "
        f"peak RSS of the process tree{spread}, {os.cpu_count()} cores"
    )
    return [(title, header, rows)]


def _fmt(c: dict[str, Any] | None) -> str:
    if c is None:
        return "-"
    if not c.get("ok"):
        return str(c.get("status", "failed"))
    walls = ", ".join(f"{w:.1f}" for w in c.get("walls", [c["wall"]]))
    return f"{c['wall']:.2f} s ({walls}; {c['peak_rss_tree_mb']:.0f} MB)"
