"""The ``fanout`` suite: dagloop against Dagster's executors and dagster-async-executor
on the fan-out job (`jobs/fanout.py`), per instance, N mapped steps and S seconds each."""

from __future__ import annotations

import itertools
from typing import Any

from harness.context import INSTANCES, Ctx
from harness.dagster_runs import add_ratios, fit_c0, merge_repeats, run_dagster_case, skip_reason
from harness.executors import EXECUTORS
from harness.targets import target

#: --headline: the cases behind the suite's targets (N = 300 is run 3 times, as in full mode)
HEADLINE = {"n": [300, 1000], "sleep": [3.0], "executors": ["dagloop", "dagster_async_executor"]}


def fanout_suite(ctx: Ctx) -> dict[str, Any]:
    if ctx.headline:  # no in-process runs: c0 (the lower bound) is kept from the earlier file
        instances = ctx.instances or INSTANCES
        ns, sleeps, executors = HEADLINE["n"], HEADLINE["sleep"], HEADLINE["executors"]
        return run_fanout_suite(ctx, instances, ns, sleeps, executors, {}, 3)
    if ctx.quick:
        instances = ["ephemeral"]
        ns = [20, 300]
        limits = {"in_process": 0}  # no S = 3 in quick mode: it is sequential (N x 3 s)
    else:
        instances = ctx.instances or INSTANCES
        # Trimmed to fit `make bench` in an hour on 2 cores: the ratios with
        # repeats alternated are the scale and storage suites'; here one run per case.
        ns = [1, 20, 300, 1000]
        limits = {"in_process": 1, "multiprocess": 1}
    target_repeats = 1
    executors = ["dagloop", "dagster_async_executor", "in_process", "multiprocess"]
    sleeps = [3.0, 0.0]
    return run_fanout_suite(ctx, instances, ns, sleeps, executors, limits, target_repeats)


def run_fanout_suite(
    ctx: Ctx,
    instances: list[str],
    ns: list[int],
    sleeps: list[float],
    executors: list[str],
    limits: dict[str, int],
    target_repeats: int,
) -> dict[str, Any]:
    repeat_ns = {300}
    cases: list[dict[str, Any]] = []
    for instance in instances:
        ctx.log(f"[dagster] instance={instance}")
        for sleep, n in itertools.product(sleeps, ns):
            for ex in executors:
                if skip_reason(ex, instance, n, sleep):
                    continue
                if sleep > 0 and ex in limits and n > limits[ex]:
                    continue
                if ex == "in_process" and sleep == 0 and n > 300 and instance != "ephemeral":
                    continue  # time budget: on persistent instances c0 is fitted up to N = 300
                if ex == "multiprocess" and n > limits.get(ex, n):
                    continue  # 4 s and a process per step
                if ex != "in_process" and sleep == 0 and n > 300 and instance != "ephemeral":
                    continue  # time budget: d-a-e takes ~2.5 min there
                cases.append(run_dagster_case(ctx, ex, instance, n, sleep))
            # The headline comparison gets extra runs, alternating the two executors so that
            # drift hits both; the median is reported (all walls are kept in the JSON).
            if sleep > 0 and n in repeat_ns:
                for rep in range(1, target_repeats):
                    pair = ["dagster_async_executor", "dagloop"]
                    for ex in pair if rep % 2 else pair[::-1]:
                        cases.append(run_dagster_case(ctx, ex, instance, n, sleep))
        cases = merge_repeats(cases)
        fit = fit_c0(cases, instance)
        if fit:
            ctx.c0[instance] = fit
            ctx.log(
                f"  c0[{instance}] = {fit['c0'] * 1000:.1f} ms/step "
                f"(slope over {fit['points']} in-process S=0 runs)"
            )
    add_ratios(cases, ctx.c0)
    targets = fanout_targets(cases, instances)
    params: dict[str, Any] = {"instances": instances, "n": ns, "sleep": sleeps}
    params["executors"] = executors
    if ctx.headline:
        params["headline"] = True
    return {
        "suite": "fanout",
        "params": params,
        "executors": {k: EXECUTORS[k].label for k in executors},
        "c0": {k: v for k, v in ctx.c0.items() if k in instances},
        "cases": cases,
        "targets": targets,
    }


def fanout_targets(cases: list[dict[str, Any]], instances: list[str]) -> list[dict[str, Any]]:
    out = []
    present_n = sorted({c["n"] for c in cases})
    for instance in instances:
        for n in (300, 1000):
            if n not in present_n:
                continue
            c = next(
                (
                    c
                    for c in cases
                    if c["executor"] == "dagloop"
                    and c["instance"] == instance
                    and c["n"] == n
                    and c["sleep"] == 3.0
                ),
                None,
            )
            note = (
                ""
                if c is None or c.get("ok")
                else f"dagloop {c.get('status')}: {c.get('error', '')}"[:200]
            )
            out.append(
                target(
                    f"fanout.{instance}.N{n}.vs_dae",
                    f"Dagster N={n} S=3 {instance}: dagloop wall / dagster-async-executor wall",
                    c.get("ratio_dagster_async_executor") if c else None,
                    0.85,
                    note,
                    row=f"{instance}, N={n}, S=3",
                    col="dagloop / dagster-async-executor",
                )
            )
            out.append(
                target(
                    f"fanout.{instance}.N{n}.vs_lb",
                    f"Dagster N={n} S=3 {instance}: dagloop wall / max(S, N*c0)",
                    c.get("ratio_lower_bound") if c else None,
                    1.15,
                    note,
                    row=f"{instance}, N={n}, S=3",
                    col="dagloop / lower bound",
                )
            )
    return out


def merge_cases(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a ``--headline`` run of the fanout suite into the earlier full result: its cases
    replace the cases of the same (executor, instance, N, S); every other case, c0 (so the
    lower bound) and the parameters are kept; ratios and verdicts are recomputed."""
    key = lambda c: (c["executor"], c["instance"], c["n"], c["sleep"])  # noqa: E731
    redone = {key(c) for c in new["cases"]}
    cases = [c for c in old["cases"] if key(c) not in redone] + new["cases"]
    for c in cases:
        for k in [k for k in c if k.startswith("ratio_")] + ["lower_bound"]:
            c.pop(k, None)
    c0 = {**old.get("c0", {}), **new["c0"]}
    add_ratios(cases, c0)
    instances = old["params"]["instances"]
    merged = {**new, "cases": cases, "c0": c0}
    merged["executors"] = {**old.get("executors", {}), **new["executors"]}
    merged["params"] = {**old["params"], "headline_redone": new["params"]}
    merged["targets"] = fanout_targets(cases, instances)
    merged["merged_with"] = {
        "command": old["command"],
        "started": old["started"],
        "git": old.get("git"),
        "cases_kept": "every case but the headline ones re-run (and c0)",
        "duration_s": old["duration_s"],
        "merged_with": old.get("merged_with"),
    }
    merged["duration_s"] = round(old["duration_s"] + new["duration_s"], 1)
    return merged
