"""What terminating a run costs: dagloop against Dagster's in-process executor.

Each case runs `dagster job execute` in a subprocess on a fresh persistent SQLite
instance, waits until a step is running (3 s in), then terminates it the way Dagster's
run launcher does: the run is marked CANCELING in the instance and the run worker gets
SIGTERM. Measured from that request: when the run's status is CANCELED (or FAILURE), when
the last event-log entry of the run was stored, and when the process exited. Executors
alternate; the median of `--repeats` is reported.

    .venv/bin/python benchmarks/termination.py [--repeats 3]

A second part measures what a SIGKILL loses: the run of 120 steps completing 25 ms
apart is killed 0.8 s after half of them started; a step whose output file exists but
whose STEP_SUCCESS is not stored lost its success, and its output's age at the kill is
the loss window.

Writes `benchmarks/results/termination.json` and prints a table.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results" / "termination.json"
CASES = [
    ("async_only", "dagloop"),
    ("async_only", "in_process"),
    ("mixed", "dagloop"),
    ("mixed", "in_process"),
]
ENDED = {dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}


def _launch(job: str, home: str) -> subprocess.Popen[bytes]:
    """`dagster job execute` of one job of `benchmarks/jobs/termination.py` in a fresh
    SQLite DAGSTER_HOME, which this process then also opens."""
    Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = home
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-m",
            "benchmarks.jobs.termination",
            "-j",
            job,
        ],
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _one(kind: str, executor: str) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        process = _launch(f"{kind}_{executor}", home)
        try:
            with dg.DagsterInstance.get() as instance:
                run = _wait_for_a_running_step(instance)
                time.sleep(3.0)
                requested = time.time()
                instance.report_run_canceling(run)
                process.send_signal(signal.SIGTERM)
                ended_at = exited_at = None
                while exited_at is None or ended_at is None:
                    now = time.time()
                    if exited_at is None and process.poll() is not None:
                        exited_at = now
                    status = instance.get_run_by_id(run.run_id).status  # type: ignore[union-attr]
                    if ended_at is None and status in ENDED:
                        ended_at = now
                    if now - requested > 120:
                        raise RuntimeError(f"{kind}/{executor} did not stop in 120 s")
                    time.sleep(0.02)
                time.sleep(1.0)  # anything still written after the exit would show here
                last = max(record.timestamp for record in instance.all_logs(run.run_id))
                return {
                    "to_status": ended_at - requested,
                    "to_last_entry": last - requested,
                    "to_exit": exited_at - requested,
                    "status": str(instance.get_run_by_id(run.run_id).status.value),  # type: ignore[union-attr,dict-item]
                }
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()


def _wait_for_a_running_step(instance: dg.DagsterInstance, starts: int = 2) -> dg.DagsterRun:
    deadline = time.time() + 120
    while time.time() < deadline:
        runs = instance.get_runs(limit=1)
        if runs:
            records = instance.get_records_for_run(
                runs[0].run_id, of_type=dg.DagsterEventType.STEP_START, limit=starts
            ).records
            if len(records) >= starts:
                return runs[0]
        time.sleep(0.05)
    raise RuntimeError("the run never started its steps")


def _sigkill_loss() -> dict[str, float]:
    with tempfile.TemporaryDirectory() as home:
        process = _launch("kill_dagloop", home)
        try:
            with dg.DagsterInstance.get() as instance:
                run = _wait_for_a_running_step(instance, 60)
                time.sleep(0.8)
                killed = time.time()
                process.kill()
                process.wait()
                stored = {
                    r.event_log_entry.step_key
                    for r in instance.get_records_for_run(
                        run.run_id, of_type=dg.DagsterEventType.STEP_SUCCESS, limit=1000
                    ).records
                }
                outputs = Path(home, "storage", run.run_id)
                ages = [
                    killed - (path / "result").stat().st_mtime
                    for path in outputs.iterdir()
                    if (path / "result").exists() and path.name not in stored
                ]
                return {
                    "successes_stored": len(stored),
                    "successes_lost": len(ages),
                    "oldest_lost_ms": round(1000 * max(ages), 1) if ages else 0.0,
                }
        finally:
            if process.poll() is None:
                process.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    samples: dict[tuple[str, str], list[dict[str, float]]] = {case: [] for case in CASES}
    for _ in range(args.repeats):
        for case in CASES:
            samples[case].append(_one(*case))
    rows = []
    for (kind, executor), runs in samples.items():
        row = {"job": kind, "executor": executor, "repeats": len(runs)}
        for key in ("to_status", "to_last_entry", "to_exit"):
            row[key] = round(statistics.median(r[key] for r in runs), 2)  # type: ignore[misc]
        row["statuses"] = sorted({str(r["status"]) for r in runs})  # type: ignore[assignment]
        rows.append(row)
    kills = [_sigkill_loss() for _ in range(args.repeats)]
    RESULTS.write_text(
        json.dumps(
            {
                "load_avg": os.getloadavg(),
                "cases": rows,
                "samples": {f"{k}/{e}": v for (k, e), v in samples.items()},
                "sigkill": kills,
            },
            indent=2,
        )
    )
    print(f"{'job':<11} {'executor':<11} {'CANCELED':>9} {'last entry':>11} {'exit':>7}  status")
    for row in rows:
        print(
            f"{row['job']:<11} {row['executor']:<11} {row['to_status']:>8.2f}s "
            f"{row['to_last_entry']:>10.2f}s {row['to_exit']:>6.2f}s  {row['statuses']}"
        )
    for kill in kills:
        print(
            f"SIGKILL: {kill['successes_stored']} successes stored, "
            f"{kill['successes_lost']} lost, the oldest {kill['oldest_lost_ms']} ms old"
        )


if __name__ == "__main__":
    main()
