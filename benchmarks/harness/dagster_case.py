"""Child process: run the fan-out job once with one executor on one instance.

Usage: python -m harness.dagster_case '<json spec>'
spec = {executor, n, sleep, instance: "ephemeral"|"sqlite"|"postgres", pg_url?, profile?,
        job_kwargs?, console_level?, exec_config?}   (exec_config replaces the executor
        entry's config; job_kwargs: extra keyword arguments of
        jobs.fanout.make_job; console_level: of Dagster's console logger, default DEBUG)

Peak RSS: ``peak_rss_self_mb`` is this process's own high-water mark (VmHWM, the run's
process: the run executes here); the parent also polls the whole process tree's RSS
every 50 ms (``peak_rss_tree_mb``, which includes step processes and Dask workers).

Success is read back from the instance after the timed part: the run's stored status must
be SUCCESS and the event log must hold a STEP_SUCCESS for the producer, every one of the N
mapped steps and the collector.
"""

from __future__ import annotations

import os
from typing import Any

from harness.proc import BENCH_DIR, case_dir, child_main, measured, peak_rss_self_mb

DAGSTER_YAML_BASE = "telemetry:\n  enabled: false\n"


def make_instance(kind: str, tmp: str, pg_url: str | None) -> Any:
    import dagster as dg
    from dagster._core.instance.ref import InstanceRef

    if kind == "ephemeral":
        return dg.DagsterInstance.ephemeral(tempdir=tmp)
    yaml = DAGSTER_YAML_BASE
    if kind == "postgres":
        assert pg_url
        yaml += f'storage:\n  postgres:\n    postgres_url: "{pg_url}"\n'
    elif kind != "sqlite":
        raise ValueError(kind)
    with open(os.path.join(tmp, "dagster.yaml"), "w") as f:
        f.write(yaml)
    return dg.DagsterInstance.from_ref(InstanceRef.from_dir(tmp))


def check_run(instance: Any, result: Any, n: int) -> dict[str, Any]:
    """Did the run succeed, producer, all N mapped steps and collector included? Read from
    the instance (run storage and event log), not only from the events execute_job
    returned."""
    run = instance.get_run_by_id(result.run_id)
    status = run.status.value if run is not None else "missing"
    succeeded = step_keys(instance, result.run_id, "STEP_SUCCESS")
    lost = expected_steps(n) - succeeded
    ok = bool(result.success) and status == "SUCCESS" and not lost
    out: dict[str, Any] = {
        "ok": ok,
        "run_status": status,
        "steps_succeeded": len(succeeded),
        "mapped_succeeded": sum(1 for k in succeeded if k.startswith("process_item[")),
    }
    if not ok:
        started = step_keys(instance, result.run_id, "STEP_START")
        why = failure_reason(result.all_events) or f"run {status}, {describe(lost, started, n)}"
        out["error"] = f"{len(succeeded)}/{n + 2} steps succeeded; {why}"[:300]
    return out


def step_keys(instance: Any, run_id: str, event_type: str) -> set[str]:
    import dagster as dg

    records = instance.all_logs(run_id, of_type=dg.DagsterEventType(event_type))
    return {e.step_key for e in records if e.step_key}


def expected_steps(n: int) -> set[str]:
    """The step keys of a successful run of jobs.fanout (mapping keys key_0 .. key_N-1)."""
    mapped = {f"process_item[key_{i}]" for i in range(n)}
    return mapped | {"create_dynamic_outputs", "collect_results"}


def describe(lost: set[str], started: set[str], n: int) -> str:
    """'<which steps> never started' (or 'did not succeed', if some of them started)."""
    mapped = sum(1 for k in lost if k.startswith("process_item["))
    names = [f"{mapped} of {n} mapped steps"] if mapped else []
    names += sorted(k for k in lost if not k.startswith("process_item["))
    verb = "did not succeed" if lost & started else "never started"
    return f"no step failed; {' and '.join(names)} {verb}"


def failure_reason(events: list[Any]) -> str | None:
    """The error of the first failure event (a step's or the run's): class and message,
    prefixed with the step key for a step; else that event's message."""
    failures = sorted((e for e in events if e.is_failure), key=lambda e: not e.is_step_failure)
    if not failures:
        return None
    e = failures[0]
    err = getattr(e.event_specific_data, "error", None)
    if err is None:
        return str(e.message)
    # SerializableErrorInfo.message is "module.Class: text"; keep the class' short name
    text = err.message.strip().split(": ", 1)[-1]
    where = f"{e.step_key}: " if e.step_key else ""
    return f"{where}{err.cls_name}: {text}"


def fanout_run(spec: dict[str, Any], tmp: str) -> tuple[Any, Any, dict[str, Any]]:
    """The instance (in `tmp`), the reconstructable fan-out job and the run config a spec
    asks for (executor, n, sleep, instance, pg_url?, job_kwargs?, console_level?)."""
    import dagster as dg

    from harness.executors import EXECUTORS

    executor = spec["executor"]
    instance = make_instance(spec["instance"], tmp, spec.get("pg_url"))
    recon = dg.build_reconstructable_job(
        "jobs.fanout",
        "make_job",
        reconstructable_kwargs={
            "executor": executor,
            "n": int(spec["n"]),
            "sleep": float(spec["sleep"]),
            **spec.get("job_kwargs", {}),
        },
        reconstructor_working_directory=BENCH_DIR,
    )
    # `exec_config`: a config decided at run time (the address of a running cluster)
    exec_config = dict(spec.get("exec_config") or EXECUTORS[executor].config)
    run_config: dict[str, Any] = {"execution": {"config": exec_config}} if exec_config else {}
    if spec.get("console_level"):  # Dagster's default console logger logs at DEBUG
        run_config["loggers"] = {"console": {"config": {"log_level": spec["console_level"]}}}
    return instance, recon, run_config


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    n = int(spec["n"])
    with case_dir("dagloop-bench-dg-") as tmp:
        instance, recon, run_config = fanout_run(spec, tmp)
        run = measured(
            lambda: dg.execute_job(recon, instance=instance, run_config=run_config),
            profile=bool(spec.get("profile")),
        )
        if run.profile is not None:
            run.profile.dump_stats(spec["profile"])
        result = run.result
        out: dict[str, Any] = {
            "wall": round(run.wall, 4),
            "cpu": round(run.cpu, 3),
            "cpu_self": round(run.cpu_self, 3),
            # Child processes that ended and were waited for during the run (step
            # processes, Dask workers of `processes: K`, whose cluster closes with it).
            "cpu_children": round(run.cpu_children, 3),
            "events": len(result.all_events),
            "peak_rss_self_mb": round(peak_rss_self_mb(), 1),
            **check_run(instance, result, n),
        }
        instance.dispose()
        return out


if __name__ == "__main__":
    child_main(main)
