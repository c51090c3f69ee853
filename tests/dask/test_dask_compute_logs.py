"""What steps on a Dask cluster's workers write, with many in flight in one worker
process: each step's stdout/stderr is captured on its own where it runs, as on the run's
loop, and the UI finds it under the step's own log key; each record of Dagster's managed
Python loggers is logged once, by the step that logged it."""

from __future__ import annotations

import os

import dagster as dg

from tests.dagster.compute_log_reading import (
    markers,
    read,
    read_step_captures,
    run_and_step_captures,
)
from tests.dagster.conftest import assert_every_started_step_ended, run_job
from tests.dagster.jobs.printing import ASYNC_STEPS, LINES, SYNC_STEPS, mapped_steps, marker
from tests.dagster.test_python_logs import WIDTH, python_logging_job
from tests.dask import jobs

E = dg.DagsterEventType


def test_each_step_on_a_worker_has_exactly_its_own_lines(
    address: str, sqlite_instance: dg.DagsterInstance
) -> None:
    config = {"execution": {"config": {"dask": {"address": address}, "sync_threads": SYNC_STEPS}}}
    outcome = run_job(jobs.printing_on_cluster, sqlite_instance, config)
    assert outcome.success
    run_id = outcome.run_id
    assert_every_started_step_ended(sqlite_instance, run_id)
    # Every step ran on a worker.
    starts = sqlite_instance.all_logs(run_id, of_type=E.STEP_START)
    assert len(starts) == ASYNC_STEPS + SYNC_STEPS + 3
    pids = {record.dagster_event.pid for record in starts if record.dagster_event is not None}
    assert pids and os.getpid() not in pids

    # The run-level capture names no step, those that ran on workers included.
    run_key, per_step = run_and_step_captures(sqlite_instance, run_id)
    mapped = mapped_steps()
    assert set(per_step) == set(mapped) | {"gather"}

    texts, seen = read_step_captures(sqlite_instance, per_step)
    for step_key, (stdout, stderr) in texts.items():
        if step_key in mapped:
            name = mapped[step_key]
            assert markers(stdout) == [marker(name, n) for n in range(LINES) if n != 4], step_key
            assert markers(stderr) == [marker(name, 4)], step_key
            # Dagster's own lines of the step, logged on the worker, are in it too.
            assert f"{step_key} - STEP_SUCCESS" in stderr
    assert "outside any mapped step" in read(sqlite_instance, per_step["gather"])[0]
    # Every line lands in exactly one capture, none in the run's.
    run_out, run_err = read(sqlite_instance, run_key)
    assert markers(run_out) == markers(run_err) == []
    assert all(count == 1 for count in seen.values())
    assert len(seen) == (ASYNC_STEPS + SYNC_STEPS) * LINES


def test_each_python_record_on_a_worker_is_logged_once_by_its_own_step(
    address: str, sqlite_instance: dg.DagsterInstance
) -> None:
    config = {"execution": {"config": {"dask": {"address": address}}}}
    outcome = run_job(python_logging_job, sqlite_instance, config)
    assert outcome.success
    logged: dict[str, list[str | None]] = {}
    pids = set()
    for record in sqlite_instance.all_logs(outcome.run_id):
        if record.user_message and "record " in record.user_message and not record.dagster_event:
            logged.setdefault(record.user_message, []).append(record.step_key)
        elif record.dagster_event is not None and record.dagster_event.step_key:
            pids.add(record.dagster_event.pid)
    assert pids and os.getpid() not in pids  # every step ran on a worker
    expected = {f"python record {i}": [f"logs_through_python[{i}]"] for i in range(WIDTH)}
    expected |= {f"sync record {i}": [f"logs_from_sync[{i}]"] for i in range(WIDTH)}
    assert logged == expected
