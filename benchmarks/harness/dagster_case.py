"""Child process: run the fan-out job once with one executor on one instance.

Usage: python -m harness.dagster_case '<json spec>'
spec = {executor, n, sleep, instance: "ephemeral"|"sqlite"|"postgres", pg_url?, profile?}
"""

from __future__ import annotations

import gc
import json
import os
import resource
import shutil
import sys
import tempfile
import time
import traceback
from typing import Any

from harness.proc import BENCH_DIR, emit, peak_rss_self_mb

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


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from harness.executors import EXECUTORS

    executor = spec["executor"]
    n, sleep = int(spec["n"]), float(spec["sleep"])
    tmp = tempfile.mkdtemp(prefix="dagloop-bench-dg-")
    try:
        instance = make_instance(spec["instance"], tmp, spec.get("pg_url"))
        recon = dg.build_reconstructable_job(
            "jobs.fanout",
            "make_job",
            reconstructable_kwargs={"executor": executor, "n": n, "sleep": sleep},
            reconstructor_working_directory=BENCH_DIR,
        )
        exec_config = dict(EXECUTORS[executor].config)
        run_config = {"execution": {"config": exec_config}} if exec_config else {}
        gc.collect()
        prof = None
        if spec.get("profile"):
            import cProfile

            prof = cProfile.Profile()
        ru0 = resource.getrusage(resource.RUSAGE_SELF)
        rc0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        if prof:
            prof.enable()
        result = dg.execute_job(recon, instance=instance, run_config=run_config)
        if prof:
            prof.disable()
        wall = time.perf_counter() - t0
        ru1 = resource.getrusage(resource.RUSAGE_SELF)
        rc1 = resource.getrusage(resource.RUSAGE_CHILDREN)
        if prof:
            prof.dump_stats(spec["profile"])
        cpu = (ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime) + (
            rc1.ru_utime + rc1.ru_stime - rc0.ru_utime - rc0.ru_stime
        )
        events = result.all_events
        steps_ok = sum(1 for e in events if e.is_step_success)
        out: dict[str, Any] = {
            "ok": bool(result.success) and steps_ok == n + 2,
            "wall": round(wall, 4),
            "cpu": round(cpu, 3),
            "steps_succeeded": steps_ok,
            "events": len(events),
            "peak_rss_self_mb": round(peak_rss_self_mb(), 1),
        }
        if not out["ok"]:
            failures = [e for e in events if e.is_failure]
            msg = failures[0].message if failures else f"success={result.success}"
            out["error"] = f"run failed ({steps_ok}/{n + 2} steps ok): {msg}"[:300]
        instance.dispose()
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    spec = json.loads(sys.argv[1])
    try:
        res = main(spec)
    except BaseException as e:
        traceback.print_exc()
        res = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    emit(res)
