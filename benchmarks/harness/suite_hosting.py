"""The hosting suite: step_host greenlet against thread."""

from __future__ import annotations

import itertools
from typing import Any

from harness.context import Ctx
from harness.dagster_runs import add_ratios, measure_c0, run_dagster_case
from harness.executors import EXECUTORS


def hosting_suite(ctx: Ctx) -> dict[str, Any]:
    if ctx.quick:
        instances, ns, sleeps = ["ephemeral"], [100], [3.0]
    else:
        instances, ns, sleeps = ctx.instances or ["ephemeral", "sqlite"], [300], [3.0, 0.0]
    hosts = ["dagloop_greenlet", "dagloop_thread"]
    cases: list[dict[str, Any]] = []
    for instance in instances:
        ctx.log(f"[hosting] instance={instance}")
        if instance not in ctx.c0:
            cases += measure_c0(ctx, instance, [20, 100] if ctx.quick else [20, 100, 300])
        for sleep, n in itertools.product(sleeps, ns):
            for ex in hosts:
                cases.append(run_dagster_case(ctx, ex, instance, n, sleep))
    add_ratios(cases, ctx.c0)
    return {
        "suite": "hosting",
        "params": {"instances": instances, "n": ns, "sleep": sleeps},
        "executors": {k: EXECUTORS[k].label for k in [*hosts, "in_process"]},
        "c0": {k: v for k, v in ctx.c0.items() if k in instances},
        "cases": cases,
        "comparisons": hosting_comparisons(cases, instances, sleeps, ns),
        "targets": [],
    }


def hosting_comparisons(
    cases: list[dict[str, Any]], instances: list[str], sleeps: list[float], ns: list[int]
) -> list[dict[str, Any]]:
    comparisons = []
    for instance, sleep, n in itertools.product(instances, sleeps, ns):
        g = next(
            (
                c
                for c in cases
                if c["executor"] == "dagloop_greenlet"
                and (c["instance"], c["sleep"], c["n"]) == (instance, sleep, n)
            ),
            None,
        )
        t = next(
            (
                c
                for c in cases
                if c["executor"] == "dagloop_thread"
                and (c["instance"], c["sleep"], c["n"]) == (instance, sleep, n)
            ),
            None,
        )
        if g and t and g.get("ok") and t.get("ok"):
            comparisons.append(
                {
                    "instance": instance,
                    "n": n,
                    "sleep": sleep,
                    "greenlet": g["wall"],
                    "thread": t["wall"],
                    "thread_over_greenlet": t["wall"] / g["wall"],
                    "greenlet_rss": g["peak_rss_tree_mb"],
                    "thread_rss": t["peak_rss_tree_mb"],
                    "faster": "greenlet" if g["wall"] <= t["wall"] else "thread",
                }
            )
    return comparisons
