"""The ``assets`` suite: what an asset costs over an op step, with dagloop and with
Dagster's in-process executor (what `execute_in_process` runs), on each storage.

Per storage, every round runs four cases, their order rotated and reversed round by
round so that drift and other load hit every case alike: N async no-op assets in layers
(`jobs.assets.make_assets_job`: layers of N/10, three dependencies each) and N mapped
async no-op op steps (`make_ops_job`), each with dagloop and with `in_process`, each run
a fresh process on a fresh instance. Medians of the successful walls; the ratio is
assets / ops per executor. dagloop's targets: at most 1.3 in memory and 1.6 on SQLite;
the in-process executor's ratio, from the same rounds, is what Dagster's own asset
machinery costs. In full mode one more, profiled, dagloop asset run per storage in this
process's memory and on SQLite says where an asset step's time goes.

``python run.py --suite assets [--quick] [--instances ephemeral,sqlite] [--repeats 3] [--n 300]``
"""

from __future__ import annotations

import contextlib
import statistics
import uuid
from typing import Any

from harness.context import Ctx
from harness.proc import run_case
from harness.targets import target

N = 1000
N_QUICK = 200
#: Assets per layer: N / LAYERS (ten layers).
LAYERS = 10
EXECUTORS = ["dagloop", "in_process"]
SHAPES = ["assets", "ops"]
DEFAULT_INSTANCES = ["ephemeral", "sqlite", "postgres"]
QUICK_INSTANCES = ["ephemeral", "sqlite"]
TARGETS = {"ephemeral": 1.3, "sqlite": 1.6}
PROFILED_INSTANCES = ["ephemeral", "sqlite"]
TIMEOUT = 1800.0
LABEL = {"ephemeral": "in memory", "sqlite": "SQLite", "postgres": "PostgreSQL"}


def _rotated(items: list[tuple[str, str]], round_: int) -> list[tuple[str, str]]:
    k = round_ % len(items)
    order = items[k:] + items[:k]
    return order if round_ % 2 == 0 else order[::-1]


def _run(ctx: Ctx, spec: dict[str, Any]) -> dict[str, Any]:
    """One case in a fresh process; on PostgreSQL in a fresh database."""
    if spec["instance"] != "postgres":
        return run_case("harness.assets_case", spec, TIMEOUT)
    if ctx.pg is None:
        return {"ok": False, "error": ctx.pg_error or "no PostgreSQL server"}
    db = f"bench_{uuid.uuid4().hex[:10]}"
    try:
        return run_case(
            "harness.assets_case", {**spec, "pg_url": ctx.pg.create_database(db)}, TIMEOUT
        )
    finally:
        with contextlib.suppress(Exception):
            ctx.pg.drop_database(db)


def assets_suite(ctx: Ctx) -> dict[str, Any]:
    instances = ctx.instances or (QUICK_INSTANCES if ctx.quick else DEFAULT_INSTANCES)
    repeats = ctx.repeats or (1 if ctx.quick else 3)
    n = ctx.n or (N_QUICK if ctx.quick else N)
    width = max(n // LAYERS, 1)
    combos = [(ex, shape) for ex in EXECUTORS for shape in SHAPES]
    runs: list[dict[str, Any]] = []
    for instance in instances:
        ctx.log(f"[assets] {LABEL[instance]}, N={n}, {repeats} round(s)")
        for round_ in range(repeats):
            for executor, shape in _rotated(combos, round_):
                spec = {"executor": executor, "shape": shape, "n": n, "width": width}
                result = _run(ctx, {**spec, "instance": instance})
                runs.append({"instance": instance, **spec, "round": round_, **result})
                ctx.log(
                    f"  {instance:<9} {executor:<10} {shape:<6} "
                    f"{result.get('wall', float('nan')):8.2f} s  cpu "
                    f"{result.get('cpu', float('nan')):7.2f} s  ok={result.get('ok')}"
                    + ("" if result.get("ok") else f"  {result.get('error')}")
                )
    profiles: dict[str, Any] = {}
    if not ctx.quick:
        for instance in [i for i in PROFILED_INSTANCES if i in instances]:
            spec = {"executor": "dagloop", "shape": "assets", "n": n, "width": width}
            result = _run(ctx, {**spec, "instance": instance, "profile": True})
            profiles[instance] = result.get("profile") or {"error": result.get("error")}
    cases = _cases(runs, instances)
    return {
        "suite": "assets",
        "params": {
            "instances": instances,
            "n": n,
            "width": width,
            "deps_per_asset": 3,
            "repeats": repeats,
            "order": "four cases each round; order rotated and reversed round by round",
            "statistic": "median wall (and CPU) of the successful runs; every run in 'walls'",
        },
        "cases": cases,
        "ratios": _ratios(cases, instances),
        "targets": _targets(cases, instances, n),
        "profiles": profiles,
        "runs": [{k: v for k, v in r.items() if k != "stderr_tail"} for r in runs],
    }


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def _cases(runs: list[dict[str, Any]], instances: list[str]) -> list[dict[str, Any]]:
    cases = []
    for instance in instances:
        for executor in EXECUTORS:
            for shape in SHAPES:
                mine = [
                    r
                    for r in runs
                    if (r["instance"], r["executor"], r["shape"]) == (instance, executor, shape)
                ]
                good = [r for r in mine if r.get("ok")]
                cases.append(
                    {
                        "instance": instance,
                        "executor": executor,
                        "shape": shape,
                        "ok": bool(good) and len(good) == len(mine),
                        "wall": _median([r["wall"] for r in good]),
                        "cpu": _median([r["cpu"] for r in good]),
                        "run_wall": _median([r["run_wall"] for r in good if "run_wall" in r]),
                        "walls": [r["wall"] for r in good],
                        "errors": [r.get("error") for r in mine if not r.get("ok")],
                    }
                )
    return cases


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def _ratios(cases: list[dict[str, Any]], instances: list[str]) -> list[dict[str, Any]]:
    by = {(c["instance"], c["executor"], c["shape"]): c for c in cases}
    rows = []
    for instance in instances:
        row: dict[str, Any] = {"instance": instance}
        for executor in EXECUTORS:
            assets, ops = by[(instance, executor, "assets")], by[(instance, executor, "ops")]
            row[f"{executor}_assets_over_ops"] = _ratio(assets["wall"], ops["wall"])
            row[f"{executor}_assets_over_ops_cpu"] = _ratio(assets["cpu"], ops["cpu"])
            row[f"{executor}_assets_over_ops_run"] = _ratio(assets["run_wall"], ops["run_wall"])
        row["dagloop_over_in_process_assets"] = _ratio(
            by[(instance, "dagloop", "assets")]["wall"],
            by[(instance, "in_process", "assets")]["wall"],
        )
        rows.append(row)
    return rows


def _targets(cases: list[dict[str, Any]], instances: list[str], n: int) -> list[dict[str, Any]]:
    by = {(c["instance"], c["executor"], c["shape"]): c["wall"] for c in cases}
    out = []
    for instance in instances:
        limit = TARGETS.get(instance)
        if limit is None:
            continue
        value = _ratio(by[(instance, "dagloop", "assets")], by[(instance, "dagloop", "ops")])
        in_process = _ratio(
            by[(instance, "in_process", "assets")], by[(instance, "in_process", "ops")]
        )
        out.append(
            target(
                f"assets.{instance}",
                f"{LABEL[instance]}: dagloop {n} assets / {n} mapped ops (wall)",
                value,
                limit,
                note=f"{LABEL[instance]}: in_process assets / ops, same rounds: {in_process}",
                row=f"dagloop N={n}",
                col=f"{LABEL[instance]} assets / ops",
            )
        )
    return out


def rows_assets(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """The suite's tables for the console and summary.md."""

    def fmt(x: float | None, unit: str = "") -> str:
        return "-" if x is None else f"{x:.2f}{unit}"

    by = {(c["instance"], c["executor"], c["shape"]): c for c in res["cases"]}
    rows = []
    for r in res["ratios"]:
        instance = r["instance"]
        for executor in EXECUTORS:
            assets, ops = by[(instance, executor, "assets")], by[(instance, executor, "ops")]
            rows.append(
                [
                    LABEL[instance],
                    executor,
                    fmt(assets["wall"], " s"),
                    fmt(ops["wall"], " s"),
                    fmt(r[f"{executor}_assets_over_ops"]),
                    fmt(assets["cpu"], " s"),
                    fmt(ops["cpu"], " s"),
                    fmt(r[f"{executor}_assets_over_ops_cpu"]),
                    fmt(assets["run_wall"], " s"),
                    fmt(ops["run_wall"], " s"),
                    fmt(r[f"{executor}_assets_over_ops_run"]),
                    str(len(assets["walls"])),
                ]
            )
    n = res["params"]["n"]
    return [
        (
            f"assets: {n} async no-op assets in layers vs {n} mapped async no-op ops "
            "(medians of alternating rounds; run: from RUN_START to RUN_SUCCESS)",
            [
                "storage",
                "executor",
                "assets wall",
                "ops wall",
                "assets / ops",
                "assets CPU",
                "ops CPU",
                "assets / ops (CPU)",
                "assets run",
                "ops run",
                "assets / ops (run)",
                "rounds",
            ],
            rows,
        )
    ]
