"""The dask and dask_cpu suites: one loop against 2 Dask worker processes."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass
from typing import Any

from harness.context import INSTANCES, Ctx
from harness.dagster_runs import run_dagster_case
from harness.executors import EXECUTORS
from harness.targets import target

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
#: the targets: (mode, reference mode, limit of mode's wall / reference's wall)
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
            n=ctx.n or (100 if quick else 300),
            sleep=(1.0 if quick else 3.0) if ctx.sleep is None else ctx.sleep,
            repeats=ctx.repeats or 1,
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
            repeats=ctx.repeats or 1,
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
    """One run's steps on one loop vs spread over 2 Dask worker processes
    (dagloop's dask2 mode with ``steps_per_worker: 512``, see harness/executors.py)."""
    return run_dask_suite(ctx, DaskParams.from_ctx(ctx))


def dask_cpu_suite(ctx: Ctx) -> dict[str, Any]:
    """CPU-bound variant: the same fan-out, the mapped op a sync op burning a fixed
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
    """The targets per instance; ``params`` with ``cpu_iterations``: those of the
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
            target(
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
