"""One Dagster fan-out case in a fresh process, and what the Dagster suites compute from
several: medians of repeats, c0 (Dagster's own cost per step), ratios."""

from __future__ import annotations

import contextlib
import os
import uuid
from typing import Any

from harness.context import Ctx
from harness.executors import EXECUTORS, availability
from harness.proc import run_case


def _timeout(executor: str, n: int, sleep: float) -> float:
    per_step = 4.0 if executor == "multiprocess" else 0.6
    sequential = executor == "in_process"
    return 90 + (n * sleep if sequential else sleep) + n * per_step


def skip_reason(executor: str, instance: str, n: int, sleep: float) -> str | None:
    spec = EXECUTORS[executor]
    if spec.max_n is not None and n > spec.max_n:
        return "out of range"
    if sleep > 0 and spec.max_n_sleep is not None and n > spec.max_n_sleep:
        return "out of range"
    return None


def run_dagster_case(
    ctx: Ctx,
    executor: str,
    instance: str,
    n: int,
    sleep: float,
    job_kwargs: dict[str, Any] | None = None,
    timeout: float | None = None,
    console_level: str | None = None,
) -> dict[str, Any]:
    """One fan-out run in a fresh process. ``job_kwargs`` go to ``jobs.fanout.make_job``;
    ``timeout`` replaces the default budget (capped at 60 s in quick mode);
    ``console_level`` sets Dagster's console logger's level (default DEBUG)."""
    case: dict[str, Any] = {"executor": executor, "instance": instance, "n": n, "sleep": sleep}
    spec = EXECUTORS[executor]
    if spec.needs_persistent_instance and instance == "ephemeral":
        case.update(ok=False, status="unsupported", error="needs a persistent instance")
        return case
    unavailable = availability(executor)
    if unavailable:
        case.update(ok=False, status="not available", error=unavailable)
        return case
    child_spec: dict[str, Any] = {
        "executor": executor,
        "instance": instance,
        "n": n,
        "sleep": sleep,
    }
    if job_kwargs:
        child_spec["job_kwargs"] = job_kwargs
    if console_level:
        child_spec["console_level"] = console_level
    db = None
    if instance == "postgres":
        if ctx.pg is None:
            case.update(ok=False, status="failed", error=ctx.pg_error or "no PostgreSQL")
            return case
        db = f"bench_{uuid.uuid4().hex[:10]}"
        child_spec["pg_url"] = ctx.pg.create_database(db)
    try:
        if timeout is None:
            timeout = _timeout(executor, n, sleep)
            if ctx.quick:
                timeout = min(timeout, 60.0)
        res = run_case("harness.dagster_case", child_spec, timeout=timeout)
    finally:
        if db and ctx.pg is not None:
            with contextlib.suppress(Exception):
                ctx.pg.drop_database(db)
    case.update(res)
    case["loadavg_1min"] = round(os.getloadavg()[0], 2)  # other load on the machine
    if res.get("ok"):
        case["status"] = "ok"
    elif "timeout" in str(res.get("error", "")):
        case["status"] = "timeout"
    else:
        case["status"] = "failed"
    ctx.log(
        f"  {instance:9} {executor:24} N={n:<5} S={sleep:g}: "
        + (
            f"{case['wall']:.2f} s, {case['peak_rss_tree_mb']:.0f} MB"
            if case["ok"]
            else case["status"] + f" ({str(case.get('error'))[:120]})"
        )
    )
    return case


def merge_repeats(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Fold repeated runs of one (executor, instance, N, S) into one case: median wall."""
    import statistics

    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for c in cases:
        groups.setdefault((c["executor"], c["instance"], c["n"], c["sleep"]), []).append(c)
    out = []
    for runs in groups.values():
        if len(runs) == 1:
            out.append(runs[0])
            continue
        ok = [r for r in runs if r.get("ok")]
        if not ok:
            out.append(runs[-1])
            continue
        walls = sorted(r["wall"] for r in ok)
        med = statistics.median(walls)
        rep = min(ok, key=lambda r: abs(r["wall"] - med))
        merged = {**rep, "wall": med, "walls": [r["wall"] for r in runs if r.get("ok")]}
        merged["runs"] = len(runs)
        merged["failed_runs"] = len(runs) - len(ok)
        merged["peak_rss_tree_mb"] = max(r["peak_rss_tree_mb"] for r in ok)
        merged["cpu"] = statistics.median(r["cpu"] for r in ok)
        out.append(merged)
    return out


def fit_c0(cases: list[dict[str, Any]], instance: str) -> dict[str, Any] | None:
    """Least-squares slope of in-process wall vs N at S = 0: Dagster's cost per no-op step."""
    pts = [
        (c["n"], c["wall"])
        for c in cases
        if c["executor"] == "in_process"
        and c["instance"] == instance
        and c["sleep"] == 0
        and c.get("ok")
    ]
    if len({n for n, _ in pts}) < 2:
        return None
    mx = sum(n for n, _ in pts) / len(pts)
    my = sum(w for _, w in pts) / len(pts)
    sxx = sum((n - mx) ** 2 for n, _ in pts)
    slope = sum((n - mx) * (w - my) for n, w in pts) / sxx
    return {
        "c0": slope,
        "intercept": my - slope * mx,
        "points": len(pts),
        "max_n": max(n for n, _ in pts),
    }


def add_ratios(
    cases: list[dict[str, Any]], c0: dict[str, dict[str, Any]], ref: str = "dagster_async_executor"
) -> None:
    by_key = {(c["executor"], c["instance"], c["n"], c["sleep"]): c for c in cases}
    for c in cases:
        fit = c0.get(c["instance"])
        if fit is not None:
            c["lower_bound"] = max(c["sleep"], c["n"] * fit["c0"])
            if c.get("ok"):
                c["ratio_lower_bound"] = c["wall"] / c["lower_bound"]
        r = by_key.get((ref, c["instance"], c["n"], c["sleep"]))
        if c.get("ok") and r is not None and r.get("ok"):
            c["ratio_dagster_async_executor"] = c["wall"] / r["wall"]


def measure_c0(ctx: Ctx, instance: str, ns: list[int]) -> list[dict[str, Any]]:
    cases = [run_dagster_case(ctx, "in_process", instance, n, 0.0) for n in ns]
    fit = fit_c0(cases, instance)
    if fit:
        ctx.c0[instance] = fit
        ctx.log(f"  c0[{instance}] = {fit['c0'] * 1000:.1f} ms/step")
    return cases
