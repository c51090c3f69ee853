"""The suites: which cases run, in which order, and how their numbers become ratios and
target verdicts. Each suite returns a JSON-able dict; ``report`` renders it.

A new suite is one more function registered in ``SUITES`` plus, usually, a few
``ExecutorSpec`` entries in ``executors.py`` (as the ``dask`` suite of issue 6 does).
"""

from __future__ import annotations

import contextlib
import itertools
import os
import re
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.engines import BASELINE, ENGINES
from harness.executors import EXECUTORS, availability
from harness.postgres import PgServer, pg_server
from harness.proc import run_case
from harness.storage_suite import storage_suite

# --------------------------------------------------------------------------- context


@dataclass
class Ctx:
    quick: bool
    log: Callable[[str], None]
    pg: PgServer | None = None
    pg_error: str | None = None
    c0: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance -> fit
    instances: list[str] | None = None  # --instances: restrict the Dagster suites
    profile_dir: str | None = None
    n: int | None = None  # --n, --sleep, --repeats: override the dask suite's defaults
    sleep: float | None = None
    repeats: int | None = None
    headline: bool = False  # --headline: the dagster suite's target cases only


@contextlib.contextmanager
def context(quick: bool, need_pg: bool, log: Callable[[str], None]) -> Iterator[Ctx]:
    ctx = Ctx(quick=quick, log=log)
    if not need_pg:
        yield ctx
        return
    try:
        cm = pg_server()
        ctx.pg = cm.__enter__()
    except Exception as e:  # recorded per case, never fatal
        ctx.pg_error = f"PostgreSQL server could not start: {type(e).__name__}: {e}"[:300]
        log(ctx.pg_error)
        yield ctx
        return
    try:
        log(f"PostgreSQL {ctx.pg.version()} on 127.0.0.1:{ctx.pg.port}")
        yield ctx
    finally:
        cm.__exit__(None, None, None)


# --------------------------------------------------------------------------- Dagster cases

INSTANCES = ["ephemeral", "sqlite", "postgres"]


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
) -> dict[str, Any]:
    """One fan-out run in a fresh process. ``job_kwargs`` go to ``jobs.fanout.make_job``;
    ``timeout`` replaces the default budget (capped at 60 s in quick mode)."""
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


# --------------------------------------------------------------------------- dagster suite


#: --headline: the cases behind issue 4's targets (N = 300 is run 3 times, as in full mode)
HEADLINE = {"n": [300, 1000], "sleep": [3.0], "executors": ["dagloop", "dagster_async_executor"]}


def dagster_suite(ctx: Ctx) -> dict[str, Any]:
    if ctx.headline:  # no in-process runs: c0 (the lower bound) is kept from the earlier file
        instances = ctx.instances or INSTANCES
        ns, sleeps, executors = HEADLINE["n"], HEADLINE["sleep"], HEADLINE["executors"]
        return run_dagster_suite(ctx, instances, ns, sleeps, executors, {}, 3)
    if ctx.quick:
        instances = ["ephemeral"]
        ns = [20, 300]
        limits = {"in_process": 0}  # no S = 3 in quick mode: it is sequential (N x 3 s)
    else:
        instances = ctx.instances or INSTANCES
        ns = [1, 5, 20, 100, 300, 1000]
        limits = {}
    target_repeats = 1 if ctx.quick else 3
    executors = ["dagloop", "dagster_async_executor", "in_process", "multiprocess"]
    sleeps = [3.0, 0.0]
    return run_dagster_suite(ctx, instances, ns, sleeps, executors, limits, target_repeats)


def run_dagster_suite(
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
    targets = dagster_targets(cases, instances)
    params: dict[str, Any] = {"instances": instances, "n": ns, "sleep": sleeps}
    params["executors"] = executors
    if ctx.headline:
        params["headline"] = True
    return {
        "suite": "dagster",
        "params": params,
        "executors": {k: EXECUTORS[k].label for k in executors},
        "c0": {k: v for k, v in ctx.c0.items() if k in instances},
        "cases": cases,
        "targets": targets,
    }


def _target(
    tid: str,
    desc: str,
    value: float | None,
    limit: float,
    note: str = "",
    row: str = "",
    col: str = "",
) -> dict[str, Any]:
    """A target of issue 4: met when value <= limit (None: not measured). row/col place it
    in the compact verdict matrix of the report."""
    met = None if value is None else value <= limit
    return {
        "id": tid,
        "description": desc,
        "value": value,
        "limit": limit,
        "met": met,
        "note": note,
        "row": row,
        "col": col,
    }


def dagster_targets(cases: list[dict[str, Any]], instances: list[str]) -> list[dict[str, Any]]:
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
                _target(
                    f"dagster.{instance}.N{n}.vs_dae",
                    f"Dagster N={n} S=3 {instance}: dagloop wall / dagster-async-executor wall",
                    c.get("ratio_dagster_async_executor") if c else None,
                    0.85,
                    note,
                    row=f"{instance}, N={n}, S=3",
                    col="dagloop / dagster-async-executor",
                )
            )
            out.append(
                _target(
                    f"dagster.{instance}.N{n}.vs_lb",
                    f"Dagster N={n} S=3 {instance}: dagloop wall / max(S, N*c0)",
                    c.get("ratio_lower_bound") if c else None,
                    1.15,
                    note,
                    row=f"{instance}, N={n}, S=3",
                    col="dagloop / lower bound",
                )
            )
    return out


# --------------------------------------------------------------------------- hosting suite


def hosting_suite(ctx: Ctx) -> dict[str, Any]:
    if ctx.quick:
        instances, ns, sleeps = ["ephemeral"], [100], [3.0]
    else:
        instances, ns, sleeps = ctx.instances or INSTANCES, [300], [3.0, 0.0]
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


def can_merge(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Same suite and mode (and for the dask suites the same N, S and CPU work)."""
    same = [old.get(k) == new.get(k) for k in ("suite", "mode")]
    if new["suite"] in ("dask", "dask_cpu"):
        same += [
            old["params"].get(k) == new["params"].get(k) for k in ("n", "sleep", "cpu_iterations")
        ]
    return all(same)


def merge_cases(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a ``--headline`` run of the dagster suite into the earlier full result: its cases
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
    merged["targets"] = dagster_targets(cases, instances)
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


def merge_instances(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a run restricted with --instances into an earlier full result of the same suite:
    the new run's instances replace the old ones, ratios and verdicts are recomputed."""
    redone = set(new["params"]["instances"])
    order = [i for i in INSTANCES if i in redone or i in old["params"]["instances"]]
    cases = [c for c in old["cases"] if c["instance"] not in redone] + new["cases"]
    for c in cases:
        for k in [k for k in c if k.startswith("ratio_")] + ["lower_bound"]:
            c.pop(k, None)
    merged = {**new, "cases": cases}
    merged["params"] = {**new["params"], "instances": order}
    if new["suite"] in ("dask", "dask_cpu"):
        add_dask_ratios(cases)
    else:
        c0 = {**{k: v for k, v in old.get("c0", {}).items() if k not in redone}, **new["c0"]}
        add_ratios(cases, c0)
        merged["c0"] = c0
    merged["merged_with"] = {
        "command": old["command"],
        "started": old["started"],
        "instances_kept": [i for i in old["params"]["instances"] if i not in redone],
        "duration_s": old["duration_s"],
    }
    merged["duration_s"] = round(old["duration_s"] + new["duration_s"], 1)
    if new["suite"] == "dagster":
        merged["targets"] = dagster_targets(cases, order)
    elif new["suite"] == "hosting":
        p = new["params"]
        merged["comparisons"] = hosting_comparisons(cases, order, p["sleep"], p["n"])
    elif new["suite"] in ("dask", "dask_cpu"):
        p = new["params"]
        merged["targets"] = dask_targets(cases, order, p["n"], p["sleep"], p)
    return merged


# --------------------------------------------------------------------------- engine suite

WORKLOADS = [
    ("independent", 10_000),
    ("chain", 10_000),
    ("layered", 10_000),
    ("diamond", 0),
    ("sleep", 1_000),
]


def _status(err: str) -> str:
    if any(x in err for x in ("AttributeError", "ImportError", "ModuleNotFound")):
        return "not available"
    return "timeout" if "timeout" in err.lower() else "failed"


def engine_suite(ctx: Ctx) -> dict[str, Any]:
    import statistics

    # rounds per workload: every engine runs once per round, in one process (see
    # engine_case.timing); peak RSS comes from a separate fresh process per engine.
    rounds = {"sleep": 3, "diamond": 5} if ctx.quick else {"sleep": 7, "diamond": 11}
    default_rounds = 10 if ctx.quick else 40
    engines = list(ENGINES)
    cases: list[dict[str, Any]] = []
    for wl, size in WORKLOADS:
        ctx.log(f"[engine] {wl}")
        nr = rounds.get(wl, default_rounds)
        timing = run_case(
            "harness.engine_case",
            {"mode": "timing", "workload": wl, "size": size, "engines": engines, "rounds": nr},
            timeout=120 + nr * len(engines) * 3,
        )
        per = timing.get("engines", {})
        base_walls = per.get(BASELINE, {}).get("walls", [])
        for eng in engines:
            case: dict[str, Any] = {"engine": eng, "workload": wl, "size": size}
            r = per.get(eng) or {"ok": False, "error": timing.get("error", "no result")}
            if r.get("ok") and r.get("walls"):
                walls = r["walls"]
                cp, n = timing["critical_path"], timing["nodes"]
                wall = statistics.median(walls)
                case.update(
                    ok=True,
                    status="ok",
                    nodes=n,
                    edges=timing["edges"],
                    critical_path=cp,
                    rounds=len(walls),
                    walls=[round(w, 6) for w in walls],
                    wall=wall,
                    wall_min=min(walls),
                    build=r["build"],
                    overhead_us_per_node=(wall - cp) / n * 1e6,
                )
                if base_walls and len(base_walls) == len(walls):
                    # ratios within each round, then the median over rounds
                    pairs = list(zip(walls, base_walls, strict=True))
                    case["ratio_wall_baseline"] = statistics.median(w / b for w, b in pairs)
                    if all(b - cp > 0 for _, b in pairs):
                        case["ratio_overhead_baseline"] = statistics.median(
                            (w - cp) / (b - cp) for w, b in pairs
                        )
                if ctx.quick and eng not in (BASELINE, "dagloop"):
                    mem = {}  # quick mode: peak RSS only for the headline engine and the baseline
                else:
                    mem = run_case(
                        "harness.engine_case",
                        {"mode": "rss", "engine": eng, "workload": wl, "size": size},
                        timeout=120,
                    )
                case["peak_rss_mb"] = mem.get("peak_rss_mb")
                case["rss_before_build_mb"] = mem.get("rss_before_build_mb")
                ctx.log(
                    f"  {eng:18} {wall * 1000:9.2f} ms  "
                    f"{case['overhead_us_per_node']:9.2f} us/node  {case['peak_rss_mb']} MB"
                )
            else:
                err = str(r.get("error", ""))
                case.update(ok=False, status=_status(err), error=err)
                ctx.log(f"  {eng:18} {case['status']}: {err[:150]}")
            cases.append(case)
    # ratios to the other engines, also per round then median
    for c in cases:
        for other in ("async_dag", "dagron"):
            o = next(
                (x for x in cases if x["engine"] == other and x["workload"] == c["workload"]), None
            )
            if c.get("ok") and o and o.get("ok") and len(o["walls"]) == len(c["walls"]):
                # overhead (wall - critical path) ratio: on the sleep-bound workloads the
                # walls are all ~the critical path; what differs is the engines' own cost
                cp = c["critical_path"]
                pairs = list(zip(c["walls"], o["walls"], strict=True))
                c[f"ratio_wall_{other}"] = statistics.median(a / b for a, b in pairs)
                if all(b - cp > 0 for _, b in pairs):
                    c[f"ratio_overhead_{other}"] = statistics.median(
                        (a - cp) / (b - cp) for a, b in pairs
                    )
    return {
        "suite": "engine",
        "params": {
            "workloads": WORKLOADS,
            "rounds": rounds,
            "default_rounds": default_rounds,
            "statistic": "median over rounds; ratios taken within each round, then the median",
        },
        "engines": {k: ENGINES[k].label for k in engines},
        "cases": cases,
        "targets": engine_targets(cases),
    }


def engine_targets(cases: list[dict[str, Any]], eng: str = "dagloop") -> list[dict[str, Any]]:
    out = []
    get = {(c["engine"], c["workload"]): c for c in cases}
    label = ENGINES[eng].label
    for wl, size in WORKLOADS:
        c = get.get((eng, wl))
        ok = c is not None and c.get("ok")
        note = "" if ok or c is None else f"{c.get('status')}: {c.get('error', '')}"[:200]
        out.append(
            _target(
                f"engine.{wl}.overhead",
                f"{label}, {wl}: overhead/node / TaskGroup baseline's",
                c.get("ratio_overhead_baseline") if ok else None,
                1.5,
                note,
                wl,
                "overhead / baseline",
            )
        )
        for other in ("async_dag", "dagron"):
            v = c.get(f"ratio_overhead_{other}") if ok else None
            out.append(
                _target(
                    f"engine.{wl}.vs_{other}",
                    f"{label}, {wl}: overhead / {ENGINES[other].label} overhead",
                    v,
                    1.0,
                    note,
                    wl,
                    f"overhead / {other.replace('_', '-')}'s",
                )
            )
        if size >= 10_000:
            out.append(
                _target(
                    f"engine.{wl}.rss",
                    f"{label}, {wl}: peak RSS (MB)",
                    c.get("peak_rss_mb") if ok else None,
                    150.0,
                    note,
                    wl,
                    "peak RSS MB",
                )
            )
        if wl == "diamond":
            out.append(
                _target(
                    f"engine.{wl}.critical_path",
                    f"{label}, diamond: wall - critical path (ms)",
                    (c["wall"] - c["critical_path"]) * 1000 if ok else None,
                    10.0,
                    note,
                    wl,
                    "wall - critical path ms",
                )
            )
    return out


# --------------------------------------------------------------------------- dask suite

#: mode -> executor key in harness/executors.py, in the order of the first round
DASK_MODES: dict[str, str] = {
    "loop": "dagloop",
    "dask2": "dagloop_dask2",
    "dae": "dagster_async_executor",
    "dagster_dask": "dagster_dask",
}
#: the CPU-bound variant (suite ``dask_cpu``): dagster-dask is left out, it cannot run the
#: dynamic fan-out at all (recorded by the I/O-bound ``dask`` suite)
DASK_CPU_MODES = ["loop", "dask2", "dae"]
#: issue 6's targets: (mode, reference mode, limit of mode's wall / reference's wall)
DASK_TARGETS: list[tuple[str, str, float]] = [("dask2", "loop", 0.6), ("dask2", "dae", 0.5)]
#: what is kept of every run of a case
SAMPLE_KEYS = (
    "repeat",
    "ok",
    "status",
    "wall",
    "cpu",
    "peak_rss_tree_mb",
    "peak_rss_self_mb",
    "steps_succeeded",
    "run_status",
    "process_seconds",
    "loadavg_1min",
    "error",
)


@dataclass(frozen=True)
class DaskParams:
    instances: list[str]
    n: int
    sleep: float
    repeats: int
    cpu_iterations: int = 0  # > 0: the CPU-bound variant (suite dask_cpu)

    @property
    def suite(self) -> str:
        return "dask_cpu" if self.cpu_iterations else "dask"

    @property
    def modes(self) -> list[str]:
        return DASK_CPU_MODES if self.cpu_iterations else list(DASK_MODES)

    @classmethod
    def from_ctx(cls, ctx: Ctx) -> DaskParams:
        quick = ctx.quick
        return cls(
            instances=ctx.instances or (["ephemeral", "sqlite"] if quick else list(INSTANCES)),
            n=ctx.n or (100 if quick else 1000),
            sleep=(1.0 if quick else 3.0) if ctx.sleep is None else ctx.sleep,
            repeats=ctx.repeats or (1 if quick else 2),
        )

    @classmethod
    def cpu_from_ctx(cls, ctx: Ctx) -> DaskParams:
        """The CPU-bound variant: no sleep; SQLite and PostgreSQL (dask2 cannot run on the
        ephemeral instance); N = 300 (quick: 50, SQLite only)."""
        from jobs.cpu import CPU_ITERATIONS

        quick = ctx.quick
        return cls(
            instances=ctx.instances or (["sqlite"] if quick else ["sqlite", "postgres"]),
            n=ctx.n or (50 if quick else 300),
            sleep=0.0,
            repeats=ctx.repeats or (1 if quick else 2),
            cpu_iterations=CPU_ITERATIONS,
        )

    @property
    def timeout(self) -> float:
        """Budget of one run: cluster start-up plus 0.6 s a step (the slowest mode measured
        needs ~0.2 s a step on PostgreSQL; the CPU-bound variant adds ~0.04 s a step, run
        one at a time on one process); past it the run is hung."""
        return 120 + self.sleep + (0.8 if self.cpu_iterations else 0.6) * self.n

    def describe(self) -> str:
        """'N=300, CPU-bound 500000 iterations' or 'N=1000, S=3'."""
        if self.cpu_iterations:
            return f"N={self.n}, CPU-bound {self.cpu_iterations} iterations/step"
        return f"N={self.n}, S={self.sleep:g}"


def dask_round(rep: int, modes: list[str] | None = None) -> list[str]:
    """The modes of round ``rep``, in alternating order, so that drift hits all alike."""
    modes = list(DASK_MODES) if modes is None else list(modes)
    return modes if rep % 2 == 0 else modes[::-1]


def dask_suite(ctx: Ctx) -> dict[str, Any]:
    """Issue 6: one run's steps on one loop vs spread over 2 Dask worker processes
    (dagloop's dask2 mode with ``steps_per_worker: 512``, see harness/executors.py)."""
    return run_dask_suite(ctx, DaskParams.from_ctx(ctx))


def dask_cpu_suite(ctx: Ctx) -> dict[str, Any]:
    """Issue 6, CPU-bound variant: the same fan-out, the mapped op a sync op burning a fixed
    amount of pure-Python CPU (``jobs.cpu.burn``) instead of sleeping."""
    return run_dask_suite(ctx, DaskParams.cpu_from_ctx(ctx))


def run_dask_suite(ctx: Ctx, p: DaskParams) -> dict[str, Any]:
    params: dict[str, Any] = {
        "instances": p.instances,
        "n": p.n,
        "sleep": p.sleep,
        "repeats": p.repeats,
    }
    if p.cpu_iterations:
        from jobs.cpu import burn_seconds

        # what one mapped step's work costs here, timed in the harness' own process
        params["cpu_iterations"] = p.cpu_iterations
        params["cpu_seconds_per_step"] = round(burn_seconds(p.cpu_iterations), 4)
        ctx.log(
            f"[{p.suite}] burn({p.cpu_iterations}) = "
            f"{params['cpu_seconds_per_step'] * 1000:.1f} ms in this process"
        )
    runs: list[dict[str, Any]] = []
    for instance in p.instances:
        ctx.log(f"[{p.suite}] instance={instance} {p.describe()}, {p.repeats} round(s)")
        for rep in range(p.repeats):
            runs += [
                run_dask_case(ctx, p, mode, instance, rep) for mode in dask_round(rep, p.modes)
            ]
    keys = dict.fromkeys((r["mode"], r["instance"]) for r in runs)
    cases = [fold_samples([r for r in runs if (r["mode"], r["instance"]) == k]) for k in keys]
    add_dask_ratios(cases)
    params.update(
        order=[dask_round(rep, p.modes) for rep in range(min(p.repeats, 2))],
        statistic="median wall of the successful runs; peak RSS: highest of them",
        executor_configs={m: EXECUTORS[DASK_MODES[m]].config for m in p.modes},
    )
    return {
        "suite": p.suite,
        "issue": 6,
        "params": params,
        "executors": {m: EXECUTORS[DASK_MODES[m]].label for m in p.modes},
        "cases": cases,
        "targets": dask_targets(cases, p.instances, p.n, p.sleep, params),
    }


def run_dask_case(ctx: Ctx, p: DaskParams, mode: str, instance: str, rep: int) -> dict[str, Any]:
    """One run of one mode; the producer and collector are tagged to stay on the run's loop
    (only dagloop's dask mode reads the tag)."""
    job_kwargs: dict[str, Any] = {"placement_local": True}
    if p.cpu_iterations:
        job_kwargs["cpu_iterations"] = p.cpu_iterations
    case = run_dagster_case(
        ctx,
        DASK_MODES[mode],
        instance,
        p.n,
        p.sleep,
        job_kwargs=job_kwargs,
        timeout=p.timeout,
    )
    return {**case, "mode": mode, "repeat": rep}


def short_error(err: object, limit: int = 140) -> str:
    """A table-sized reason: one line, its first sentence, the '0/N steps succeeded'
    prefix dropped (kept when some steps did succeed)."""
    text = " ".join(str(err).split())
    text = re.sub(r"^0/\d+ steps succeeded; ", "", text)
    end = text.find(". ")
    if end != -1:
        text = text[: end + 1]
    return text if len(text) <= limit else text[: limit - 1] + "…"


def fold_samples(runs: list[dict[str, Any]]) -> dict[str, Any]:
    """The runs of one (mode, instance) as one case: median wall and CPU of the successful
    runs, their highest peak RSS; every run kept in ``samples``."""
    import statistics

    case = {k: runs[0][k] for k in ("mode", "executor", "instance", "n", "sleep")}
    case["samples"] = [{k: r[k] for k in SAMPLE_KEYS if k in r} for r in runs]
    ok = [r for r in runs if r.get("ok")]
    failed = [r for r in runs if not r.get("ok")]
    case.update(runs=len(runs), failed_runs=len(failed))
    if failed:
        case["error"] = str(failed[0].get("error", failed[0].get("status", "failed")))
        case["reason"] = short_error(case["error"])
    if not ok:
        case.update(ok=False, status=failed[-1].get("status", "failed"))
        return case
    case.update(
        ok=True,
        status="ok",
        wall=statistics.median(r["wall"] for r in ok),
        walls=[r["wall"] for r in ok],
        cpu=statistics.median(r["cpu"] for r in ok),
        peak_rss_tree_mb=max(r["peak_rss_tree_mb"] for r in ok),
        peak_rss_self_mb=max(r["peak_rss_self_mb"] for r in ok),
    )
    return case


def add_dask_ratios(cases: list[dict[str, Any]]) -> None:
    """``ratio_<ref>`` = mode's median wall / the reference mode's, per instance."""
    by = {(c["mode"], c["instance"]): c for c in cases}
    for mode, ref, _limit in DASK_TARGETS:
        for c in cases:
            r = by.get((ref, c["instance"]))
            if c["mode"] == mode and c.get("ok") and r is not None and r.get("ok"):
                c[f"ratio_{ref}"] = c["wall"] / r["wall"]


def failed_runs(case: dict[str, Any]) -> str:
    """'<reason>' if every run of the case failed, else 'k of n runs failed: <reason>'."""
    reason = case.get("reason", case.get("status", "failed"))
    if case.get("ok"):
        return f"{case['failed_runs']} of {case['runs']} runs failed: {reason}"
    return str(reason)


def dask_targets(
    cases: list[dict[str, Any]],
    instances: list[str],
    n: int,
    sleep: float,
    params: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The targets of issue 6 per instance; ``params`` with ``cpu_iterations``: those of the
    CPU-bound variant (ids ``dask_cpu.<instance>.…``)."""
    iterations = (params or {}).get("cpu_iterations")
    suite = "dask_cpu" if iterations else "dask"
    what = f"CPU-bound {iterations} iterations/step" if iterations else f"S={sleep:g}"
    by = {(c["mode"], c["instance"]): c for c in cases}
    out = []
    for instance, (mode, ref, limit) in itertools.product(instances, DASK_TARGETS):
        c, r = by.get((mode, instance)), by.get((ref, instance))
        note = "; ".join(
            f"{m} on {instance}: {failed_runs(x)}"
            for m, x in ((mode, c), (ref, r))
            if x is not None and x.get("failed_runs")
        )
        out.append(
            _target(
                f"{suite}.{instance}.{mode}_vs_{ref}",
                f"Dask N={n} {what} {instance}: {mode} wall / {ref} wall",
                c.get(f"ratio_{ref}") if c else None,
                limit,
                note,
                row=f"{instance}, N={n}, {what}",
                col=f"{mode} / {ref}",
            )
        )
    return out


# --------------------------------------------------------------------------- registry

SUITES: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "dagster": dagster_suite,
    "hosting": hosting_suite,
    "engine": engine_suite,
    "dask": dask_suite,
    "dask_cpu": dask_cpu_suite,
    "storage": storage_suite,
}


def _pg_unless_quick(quick: bool, instances: list[str] | None) -> bool:
    return not quick and (instances is None or "postgres" in instances)


def _pg_if_asked(quick: bool, instances: list[str] | None) -> bool:
    return "postgres" in instances if instances else not quick


#: does a suite need the PostgreSQL server, given --quick and --instances?
NEEDS_PG: dict[str, Callable[[bool, list[str] | None], bool]] = {
    "dagster": _pg_unless_quick,  # quick mode runs the ephemeral instance only
    "hosting": _pg_unless_quick,
    "engine": lambda quick, instances: False,
    "dask": _pg_if_asked,  # quick mode: ephemeral and SQLite unless --instances says more
    "dask_cpu": _pg_if_asked,  # quick mode: SQLite unless --instances says more
    "storage": lambda quick, instances: instances is None or "postgres" in instances,
}
#: suites whose cases a run restricted with --instances merges into the earlier results
MERGEABLE = ("dagster", "hosting", "dask", "dask_cpu")


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
