"""The scaleout suite: what a run on a Dask cluster costs each process, against the
single loop, in the same benchmark run.

Modes (every run a fresh process, ``harness/scaleout_case.py``; the fan-out job of
``jobs/fanout.py`` with the default placement, every step on the cluster, so that the run
process's figure is what placing steps costs it and nothing else; Dagster's console
logger at WARNING):

* ``loop``: dagloop's ``async_executor``, every step on the run's loop;
* ``processes2``: ``dask: {processes: 2, steps_on_loop_while_starting: 0}``: a local
  cluster started for the run (inside the measured wall), every step on it; the
  scheduler runs in the run process;
* ``processes2_lending``: ``dask: {processes: 2}`` as it comes: while the cluster
  starts, the run's loop runs one step at a time placed on it (the fan-out's producer,
  then a few mapped steps); only its wall is a target;
* ``address``: ``dask: {address: ...}`` of a cluster started once for the suite with
  Dask's own command-line tools (``dask scheduler`` and 2 ``dask worker`` on 127.0.0.1,
  ``--nthreads 512`` each, ``harness/dask_cluster.py``); before an instance's rounds, one
  unmeasured run of 20 steps warms its workers up (imports), as a long-lived cluster is.

Cases per instance (SQLite and PostgreSQL): ``noop``, N = 1,000 mapped no-op async steps;
``cpu``, N = 300 mapped sync steps each burning ``jobs.cpu.burn(500_000)``. Each case runs
every mode once per round, the order reversed every other round; ratios are taken
within a round, then the median over rounds.

CPU (user + system, over ``execute_job``): the run process from its own ``getrusage``;
the workers of ``processes2`` from the forkserver that forked them (psutil: its own CPU
and its ended children's) and ``RUSAGE_CHILDREN`` (each worker from psutil samples); the
scheduler and each worker of ``address`` from psutil before and after the run. Per step:
every mode over its N + 2 steps. The ``processes2`` figures include starting the cluster
(its forkserver imports Dask and Dagster, its workers the job), as a run that starts its
own cluster pays. The ratios, per mode:

* ``run / loop``: run process CPU per remote step / loop's CPU per step (target <= 0.25);
* ``workers / loop``: workers' CPU per step / loop's CPU per step (target <= 1.3);
* ``wall / loop`` (targets for ``processes2`` and ``processes2_lending``: <= 0.85
  no-op, <= 0.6 CPU-bound).

``flat``: ``processes2`` at N = 10,000 no-op steps against the median at N = 1,000:
wall per step, 10,000 / 1,000 (target <= 1.2), on SQLite (and PostgreSQL in full mode).

``--quick``: SQLite only, 1 round, CPU-bound N = 100, the flat case at N = 3,000.
``--instances``, ``--repeats`` and ``--n`` (the large N of the flat case) override.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import tempfile
import uuid
from dataclasses import dataclass
from typing import Any

from jobs.cpu import CPU_ITERATIONS

from harness.context import Ctx
from harness.dask_cluster import CliCluster, cli_cluster
from harness.proc import run_case
from harness.targets import target

MODES = ["loop", "processes2", "processes2_lending", "address"]
CLUSTER_MODES = ["processes2", "processes2_lending", "address"]
#: Modes whose run process runs only the run (every step on the cluster): the CPU
#: ratios are what placing steps costs.
ALL_REMOTE = ["processes2", "address"]
#: Modes started for the run, whose wall has a target.
STARTED_FOR_THE_RUN = ["processes2", "processes2_lending"]
NOOP_N = 1000
WARM_UP_N = 20
QUIET = "WARNING"
LIMIT_RUN = 0.25
LIMIT_WORKERS = 1.3
LIMIT_WALL = {"noop": 0.85, "cpu": 0.6}
LIMIT_FLAT = 1.2


@dataclass(frozen=True)
class ScaleoutParams:
    instances: list[str]
    rounds: int
    cpu_n: int
    big_n: int
    big_instances: list[str]

    @classmethod
    def from_ctx(cls, ctx: Ctx) -> ScaleoutParams:
        instances = ctx.instances or (["sqlite"] if ctx.quick else ["sqlite", "postgres"])
        return cls(
            instances=instances,
            rounds=ctx.repeats or (1 if ctx.quick else 3),
            cpu_n=100 if ctx.quick else 300,
            big_n=ctx.n or (3000 if ctx.quick else 10_000),
            big_instances=instances[:1] if ctx.quick else instances,
        )


def _exec_config(mode: str, cluster: CliCluster) -> dict[str, Any]:
    if mode == "processes2":
        return {"dask": {"processes": 2, "steps_on_loop_while_starting": 0}}
    if mode == "processes2_lending":
        return {"dask": {"processes": 2}}
    if mode == "address":
        return {"dask": {"address": cluster.address}}
    return {}


def _timeout(ctx: Ctx, n: int, cpu: bool) -> float:
    budget = 120 + n * (0.3 if cpu else 0.1)
    return min(budget, 300.0) if ctx.quick else budget


def run_one(
    ctx: Ctx, cluster: CliCluster, mode: str, instance: str, n: int, cpu: bool
) -> dict[str, Any]:
    """One run in a fresh process, with the CPU of every process it used."""
    spec: dict[str, Any] = {
        "executor": "dagloop",
        "instance": instance,
        "n": n,
        "sleep": 0.0,
        "console_level": QUIET,
        "exec_config": _exec_config(mode, cluster),
        "job_kwargs": {"cpu_iterations": CPU_ITERATIONS} if cpu else {},
    }
    run: dict[str, Any] = {"mode": mode, "instance": instance, "n": n}
    db = None
    if instance == "postgres":
        if ctx.pg is None:
            return {**run, "ok": False, "error": ctx.pg_error or "no PostgreSQL"}
        db = f"bench_{uuid.uuid4().hex[:10]}"
        spec["pg_url"] = ctx.pg.create_database(db)
    before = cluster.cpu_seconds() if mode == "address" else None
    try:
        res = run_case("harness.scaleout_case", spec, timeout=_timeout(ctx, n, cpu))
    finally:
        if db and ctx.pg is not None:
            with contextlib.suppress(Exception):
                ctx.pg.drop_database(db)
    run.update({k: v for k, v in res.items() if k != "stderr_tail"})
    if not res.get("ok"):
        run["stderr_tail"] = str(res.get("stderr_tail", ""))[-600:]
    run["loadavg_1min"] = round(os.getloadavg()[0], 2)
    if before is not None:
        after = cluster.cpu_seconds()
        delta = {k: round(after[k] - before[k], 3) for k in after}
        run["cpu_scheduler"] = delta.pop("scheduler")
        run["cpu_workers_each"] = sorted(delta.values(), reverse=True)
        run["cpu_workers"] = round(sum(delta.values()), 3)
    elif mode.startswith("processes2"):
        run["cpu_workers"] = res.get("cpu_children")
        run["cpu_workers_each"] = res.get("cpu_children_each")
    _per_step(run)
    ctx.log(
        f"  {instance:8} {mode:10} N={n:<6}{' cpu' if cpu else ''}: "
        + (
            f"{run['wall']:.2f} s, run {run['ms_run']:.2f} ms/step"
            + (f", workers {run['ms_workers']:.2f} ms/step" if "ms_workers" in run else "")
            if run.get("ok")
            else f"failed ({str(run.get('error'))[:160]})"
        )
    )
    return run


def _per_step(run: dict[str, Any]) -> None:
    """ms of CPU per step, over the run's N + 2 steps."""
    if not run.get("ok"):
        return
    steps = run["n"] + 2
    run["ms_run"] = round(1000 * run["cpu_run"] / steps, 3)
    run["ms_wall"] = round(1000 * run["wall"] / steps, 3)
    if run.get("cpu_workers") is not None:
        run["ms_workers"] = round(1000 * run["cpu_workers"] / steps, 3)
    if run.get("cpu_scheduler") is not None:
        run["ms_scheduler"] = round(1000 * run["cpu_scheduler"] / steps, 3)


def _median(values: list[float]) -> float | None:
    return round(statistics.median(values), 3) if values else None


def rounds_case(
    ctx: Ctx, cluster: CliCluster, p: ScaleoutParams, instance: str, case: str
) -> dict[str, Any]:
    """Every mode once per round, alternating; the ratios of each round, then medians."""
    cpu = case == "cpu"
    n = p.cpu_n if cpu else NOOP_N
    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in MODES}
    for rnd in range(p.rounds):
        for mode in MODES if rnd % 2 == 0 else MODES[::-1]:
            runs[mode].append({**run_one(ctx, cluster, mode, instance, n, cpu), "round": rnd})
    return {"case": case, "instance": instance, "n": n, "modes": summarise(runs)}


#: ratio name -> (a cluster mode's key, the loop's key): both CPU ratios are against the
#: loop's run process, the only process of the single loop
RATIOS = {
    "run": ("ms_run", "ms_run"),
    "workers": ("ms_workers", "ms_run"),
    "wall": ("wall", "wall"),
}


def summarise(runs: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Per mode: medians of its runs, and the medians of its per-round ratios to the loop."""
    modes: dict[str, dict[str, Any]] = {}
    for mode, rs in runs.items():
        ok = [r for r in rs if r.get("ok")]
        summary: dict[str, Any] = {
            "ok": len(ok) == len(rs),
            "runs": rs,
            "errors": [r.get("error") for r in rs if not r.get("ok")],
        }
        for key in ("wall", "ms_run", "ms_workers", "ms_scheduler", "peak_rss_self_mb"):
            summary[key] = _median([r[key] for r in ok if r.get(key) is not None])
        if mode != "loop":
            for name, (key, loop_key) in RATIOS.items():
                pairs = [
                    a[key] / b[loop_key]
                    for a, b in zip(rs, runs["loop"], strict=True)
                    if a.get("ok") and b.get("ok") and a.get(key) and b.get(loop_key)
                ]
                summary[f"ratio_{name}"] = _median(pairs)
        modes[mode] = summary
    return modes


def flat_case(
    ctx: Ctx, cluster: CliCluster, p: ScaleoutParams, instance: str, small: dict[str, Any]
) -> dict[str, Any]:
    """`processes2` at N = big against its median at N = 1,000: wall per step."""
    large = run_one(ctx, cluster, "processes2", instance, p.big_n, False)
    small_ms = small["modes"]["processes2"]["wall"]
    small_ms = None if small_ms is None else 1000 * small_ms / NOOP_N
    big_ms = large.get("ms_wall") if large.get("ok") else None
    return {
        "case": "flat",
        "instance": instance,
        "n": p.big_n,
        "large": large,
        "small_ms_per_step": None if small_ms is None else round(small_ms, 3),
        "large_ms_per_step": big_ms,
        "ratio": round(big_ms / small_ms, 3) if big_ms and small_ms else None,
        "ratio_of": f"processes2 wall per step at N={p.big_n} / at N={NOOP_N}",
    }


def scaleout_suite(ctx: Ctx) -> dict[str, Any]:
    p = ScaleoutParams.from_ctx(ctx)
    cases: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="dagloop-bench-cluster-") as logs:
        ctx.log("[scaleout] starting `dask scheduler` and 2 `dask worker` on 127.0.0.1")
        with cli_cluster(2, logs) as cluster:
            for instance in p.instances:
                ctx.log(f"[scaleout] {instance}: warm-up run on the CLI cluster (not measured)")
                run_one(ctx, cluster, "address", instance, WARM_UP_N, False)
                noop = rounds_case(ctx, cluster, p, instance, "noop")
                cases += [noop, rounds_case(ctx, cluster, p, instance, "cpu")]
                if instance in p.big_instances:
                    cases.append(flat_case(ctx, cluster, p, instance, noop))
    return {
        "suite": "scaleout",
        "params": {
            "instances": p.instances,
            "rounds": p.rounds,
            "noop_n": NOOP_N,
            "cpu_n": p.cpu_n,
            "cpu_iterations": CPU_ITERATIONS,
            "big_n": p.big_n,
            "modes": {
                "loop": "async_executor, default config",
                "processes2": "dask: {processes: 2, steps_on_loop_while_starting: 0} "
                "(cluster start inside the wall, every step on it)",
                "processes2_lending": "dask: {processes: 2} (default: one step at a "
                "time lent to the run's loop while the cluster starts)",
                "address": "dask: {address}: `dask scheduler` + 2 `dask worker --nthreads "
                "512` on 127.0.0.1, started once, warmed up",
            },
            "statistic": "ratios: median of per-round ratios, modes alternated",
            "cpu": "run process: getrusage; processes2 workers: their forkserver "
            "(psutil, own and ended children) and RUSAGE_CHILDREN; "
            "address scheduler and workers: psutil deltas",
            "console": QUIET,
        },
        "cases": cases,
        "targets": scaleout_targets(cases),
    }


def scaleout_targets(cases: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for c in cases:
        where = c["instance"]
        if c["case"] == "flat":
            out.append(
                target(
                    f"scaleout.flat.{where}",
                    f"{c['ratio_of']}, {where}",
                    c.get("ratio"),
                    LIMIT_FLAT,
                    row=f"flat in N, {where}",
                    col=f"{c['n']:,} / 1,000",
                )
            )
            continue
        row = f"{c['case']} N={c['n']}, {where}"
        for mode in CLUSTER_MODES:
            m = c["modes"][mode]
            if c["case"] == "noop" and mode in ALL_REMOTE:
                out.append(
                    target(
                        f"scaleout.{c['case']}.{where}.{mode}.run",
                        f"{row}: {mode} run process CPU per remote step / loop's per step",
                        m.get("ratio_run"),
                        LIMIT_RUN,
                        row=row,
                        col=f"{mode} run / loop",
                    )
                )
                out.append(
                    target(
                        f"scaleout.{c['case']}.{where}.{mode}.workers",
                        f"{row}: {mode} workers' CPU per step / loop's per step",
                        m.get("ratio_workers"),
                        LIMIT_WORKERS,
                        row=row,
                        col=f"{mode} workers / loop",
                    )
                )
            if mode in STARTED_FOR_THE_RUN:
                out.append(
                    target(
                        f"scaleout.{c['case']}.{where}.{mode}.wall",
                        f"{row}: {mode} wall / loop wall",
                        m.get("ratio_wall"),
                        LIMIT_WALL[c["case"]],
                        row=row,
                        col=f"{mode} wall / loop, {c['case']}",
                    )
                )
    return out


def _ms(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}"


def _x(v: float | None) -> str:
    return "-" if v is None else f"{v:.2f}x"


def rows_scaleout(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """A row per case and mode: wall, CPU per step of each process, the three ratios."""
    rows = []
    for c in res["cases"]:
        if c["case"] == "flat":
            big = c["large"]
            detail = (
                f"{big['wall']:.1f} s, {c['large_ms_per_step']} ms/step vs "
                f"{c['small_ms_per_step']} ms/step"
                if big.get("ok")
                else f"failed: {str(big.get('error'))[:80]}"
            )
            rows.append(
                [
                    f"flat N={c['n']:,}",
                    c["instance"],
                    "processes2",
                    detail,
                    "",
                    "",
                    "",
                    "",
                    "",
                    _x(c.get("ratio")),
                ]
            )
            continue
        for mode, m in c["modes"].items():
            wall = (
                f"{m['wall']:.2f} s"
                if m.get("wall") is not None
                else f"failed: {str((m.get('errors') or ['?'])[0])[:60]}"
            )
            rows.append(
                [
                    f"{c['case']} N={c['n']}",
                    c["instance"],
                    mode,
                    wall,
                    _ms(m.get("ms_run")),
                    _ms(m.get("ms_workers")),
                    _ms(m.get("ms_scheduler")),
                    _x(m.get("ratio_run")),
                    _x(m.get("ratio_workers")),
                    _x(m.get("ratio_wall")),
                ]
            )
    title = (
        f"scaleout: medians of {res['params']['rounds']} alternating round(s); CPU ms per step "
        "(loop: per step; cluster modes: per remote step)"
    )
    header = [
        "case",
        "storage",
        "mode",
        "wall",
        "run ms/step",
        "workers ms/step",
        "scheduler ms/step",
        "run / loop",
        "workers / loop",
        "wall / loop",
    ]
    return [(title, header, rows)]
