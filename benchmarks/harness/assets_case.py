"""Child process: run the asset graph or the mapped-ops job once with one executor on
one instance (the ``assets`` suite's case).

Usage: python -m harness.assets_case '<json spec>'
spec = {executor, shape: "assets"|"ops", n, width, instance, pg_url?, profile?}

The wall is `dg.execute_job` alone, the CPU `getrusage` (self and children) around it;
`run_wall` is the part from the run's RUN_START to its RUN_SUCCESS entry (the wall less
building the job and creating the run, which for an asset job stores a planned
materialization per asset).
Success is read back from the instance: run status SUCCESS, a STEP_SUCCESS per step and,
for the asset graph, N stored materializations. With `profile`, the run's thread is
profiled (cProfile) and the functions named in `PROFILED` are returned with their
cumulative seconds, with the top functions by cumulative time.
"""

from __future__ import annotations

from typing import Any

from harness.dagster_case import make_instance
from harness.proc import BENCH_DIR, case_dir, child_main, measured, peak_rss_self_mb

#: Where an asset step's time goes that an op step's does not (Dagster's functions), and
#: what stores the run's entries.
PROFILED = (
    "create_run_for_job",
    "_log_asset_planned_events",
    "get_definition",
    "execute_run",
    "fetch_external_input_asset_version_info",
    "get_asset_records",
    "_log_materialization_or_observation_events_for_asset",
    "handle_new_event",
    "store_event",
    "execute_job",
)
TOP = 30


def _job(spec: dict[str, Any]) -> Any:
    import dagster as dg

    if spec["shape"] == "assets":
        name, kwargs = "make_assets_job", {"n": spec["n"], "width": spec["width"]}
    else:
        name, kwargs = "make_ops_job", {"n": spec["n"]}
    return dg.build_reconstructable_job(
        "jobs.assets",
        name,
        reconstructable_kwargs={"executor": spec["executor"], **kwargs},
        reconstructor_working_directory=BENCH_DIR,
    )


def _check(instance: Any, result: Any, spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    run = instance.get_run_by_id(result.run_id)
    status = run.status.value if run is not None else "missing"
    successes = len(instance.all_logs(result.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS))
    steps = spec["n"] + (0 if spec["shape"] == "assets" else 2)
    start = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_START)
    end = instance.all_logs(result.run_id, of_type=dg.DagsterEventType.RUN_SUCCESS)
    out: dict[str, Any] = {"run_status": status, "steps_succeeded": successes}
    if start and end:
        out["run_wall"] = round(end[0].timestamp - start[0].timestamp, 3)
    ok = bool(result.success) and status == "SUCCESS" and successes == steps
    if spec["shape"] == "assets":
        stored = len(
            instance.all_logs(result.run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION)
        )
        out["materializations"] = stored
        ok = ok and stored == spec["n"]
    out["ok"] = ok
    if not ok:
        out["error"] = f"run {status}, {successes}/{steps} steps succeeded"
    return out


def _profile_figures(prof: Any, wall: float) -> dict[str, Any]:
    """Cumulative seconds of the `PROFILED` functions (per module defining one) and the
    top functions by cumulative time."""
    import pstats

    stats = pstats.Stats(prof).stats  # type: ignore[attr-defined]
    named: dict[str, float] = {}
    rows = []
    for (path, line, func), (_cc, calls, _tt, ct, _callers) in stats.items():
        if func in PROFILED:
            named[f"{path.rsplit('/', 1)[-1]}:{func}"] = round(ct, 3)
        rows.append((ct, calls, f"{path.rsplit('site-packages/', 1)[-1]}:{line}({func})"))
    rows.sort(reverse=True)
    top = [{"cum_s": round(ct, 3), "calls": calls, "function": f} for ct, calls, f in rows[:TOP]]
    return {"wall": round(wall, 3), "named_cum_s": named, "top": top}


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    with case_dir("dagloop-bench-assets-") as tmp:
        instance = make_instance(spec["instance"], tmp, spec.get("pg_url"))
        recon = _job(spec)
        from harness.executors import EXECUTORS

        run_config: dict[str, Any] = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        if EXECUTORS[spec["executor"]].config:
            run_config["execution"] = {"config": EXECUTORS[spec["executor"]].config}
        run = measured(
            lambda: dg.execute_job(recon, instance=instance, run_config=run_config),
            profile=bool(spec.get("profile")),
        )
        result, wall, cpu, prof = run.result, run.wall, run.cpu, run.profile
        out: dict[str, Any] = {
            "wall": round(wall, 3),
            "cpu": round(cpu, 3),
            "peak_rss_self_mb": round(peak_rss_self_mb(), 1),
            **_check(instance, result, spec),
        }
        if prof is not None:
            out["profile"] = _profile_figures(prof, wall)
        instance.dispose()
        return out


if __name__ == "__main__":
    child_main(main)
