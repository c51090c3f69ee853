"""Faults of steps on a real cluster (`dask scheduler` + two `dask worker` processes,
reached by `address`): a worker killed mid-run, the run terminated, step budgets; on
SQLite and on PostgreSQL. Every op body leaves a marker when it begins, so the tests
count how often each step's code ran."""

from __future__ import annotations

import ast
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.dagster.conftest import records, run_job, wait_until
from tests.dagster.interrupt_audit import OPENING, audit_run
from tests.dask import fault_jobs
from tests.dask.cli_cluster import CliCluster
from tests.dask.lost_reading import lost_events, step_errors

E = dg.DagsterEventType
GRACE_SECONDS = 2.0
STORAGES = pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)


def _config(address: str, marker_dir: Path, seconds: float, *ops: str, **executor: Any) -> Any:
    marker_dir.mkdir(exist_ok=True)
    op_config = {"marker_dir": str(marker_dir), "seconds": seconds}
    return {
        "execution": {
            "config": {
                "dask": {"address": address},
                "termination_grace_seconds": GRACE_SECONDS,
                **executor,
            }
        },
        "ops": {name: {"config": op_config} for name in ops},
    }


def _in_background(target: Any) -> threading.Thread:
    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread


def _opened(entries: list[dg.EventLogEntry]) -> Counter[str]:
    """Attempts each step opened (STEP_START, STEP_RESTARTED)."""
    return Counter(
        r.step_key or ""
        for r in entries
        if r.dagster_event is not None and r.dagster_event.event_type in OPENING
    )


def _cls(error: Any) -> str:
    """The class of a step's error: the user code's (Dagster wraps it), else its own."""
    return str((error.cause or error).cls_name)


def _run_failure_class(entries: list[dg.EventLogEntry]) -> str | None:
    for r in entries:
        event = r.dagster_event
        if event is not None and event.event_type == E.RUN_FAILURE:
            error = event.event_specific_data.error if event.event_specific_data else None
            return error.cls_name if error is not None else None
    return None


@STORAGES
def test_a_killed_worker_fails_each_of_its_steps_once(
    dask_cli_cluster: CliCluster, storage_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    cluster, instance, markers = dask_cli_cluster, storage_instance, tmp_path / "markers"
    cluster.wait_for_workers()
    pids = cluster.worker_pids()
    killed: dict[str, str] = {}

    def kill_the_busier_worker() -> None:
        wait_until(lambda: markers.exists() and len(list(markers.iterdir())) >= 12, 120)
        busy = Counter(pid for ran in fault_jobs.ran(markers).values() for pid in ran)
        pid = busy.most_common(1)[0][0]
        killed["address"] = next(address for address, p in pids.items() if p == pid)
        os.kill(pid, signal.SIGKILL)

    killer = _in_background(kill_the_busier_worker)
    config = _config(cluster.address, markers, 4.0, "waits", "works")
    outcome = run_job(fault_jobs.mapped, instance, config)
    killer.join(timeout=60)
    address = killed["address"]
    entries = records(instance, outcome.run_id)

    # One engine event says what the lost worker took along.
    (lost_event,) = [
        r.dagster_event
        for r in entries
        if r.dagster_event is not None
        and r.dagster_event.event_type == E.ENGINE_EVENT
        and "lost_steps" in r.dagster_event.engine_event_data.metadata
    ]
    metadata = lost_event.engine_event_data.metadata
    assert metadata["worker"].value == address
    lost = set(metadata["lost_steps"].value)
    assert lost
    # Each of them ended once, with the error naming the worker: the async op's
    # RetryPolicy retried it, the sync op (no policy) failed.
    errors = step_errors(entries)
    lost_ends = Counter(key for key, error in errors if error.cls_name == "WorkerLostError")
    assert set(lost_ends) == lost and set(lost_ends.values()) == {1}
    assert all(
        address in error.message for _, error in errors if error.cls_name == "WorkerLostError"
    )
    assert {error.cls_name for _, error in errors} == {"WorkerLostError"}
    retried = {key for key, _ in errors if key.startswith("waits[")}
    successes = {
        r.step_key
        for r in entries
        if r.dagster_event and r.dagster_event.event_type == E.STEP_SUCCESS
    }
    assert retried <= successes
    # No step's code ran more often than its attempts opened: Dask ran none again.
    opened = _opened(entries)
    ran = {key: len(pids_) for key, pids_ in fault_jobs.ran(markers).items()}
    assert all(count <= opened[key] for key, count in ran.items()), (ran, opened)
    assert sum(ran.values()) >= 2 * fault_jobs.WIDTH
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit
    # The run fails with a lost step's error, or succeeds if only retried steps were lost.
    assert _run_failure_class(entries) in (None, "WorkerLostError")
    cluster.wait_for_workers()  # its nanny started a new worker process


@STORAGES
def test_terminate_stops_the_workers_steps_and_starts_no_more(
    dask_cli_cluster: CliCluster, storage_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    cluster, instance, markers = dask_cli_cluster, storage_instance, tmp_path / "markers"
    cluster.wait_for_workers()

    def cancel_once_some_started() -> None:
        wait_until(lambda: markers.exists() and len(list(markers.iterdir())) >= 12, 120)
        (run,) = instance.get_runs(limit=1)
        instance.report_run_canceling(run)

    canceller = _in_background(cancel_once_some_started)
    config = _config(cluster.address, markers, 60.0, "waits", "works")
    outcome = run_job(fault_jobs.mapped, instance, config)
    canceller.join(timeout=60)
    assert outcome.status == dg.DagsterRunStatus.CANCELED
    entries = records(instance, outcome.run_id)

    # The executor's stop: the steps in flight it interrupts (claimed by a worker, so
    # begun); every other step was withdrawn and never starts.
    (stop,) = [
        r
        for r in entries
        if r.dagster_event is not None
        and r.dagster_event.event_type == E.ENGINE_EVENT
        and r.step_key is None
        and "steps_interrupted" in r.dagster_event.engine_event_data.metadata
    ]
    listed = stop.dagster_event.engine_event_data.metadata["steps_interrupted"].value
    interrupted = set(ast.literal_eval(listed))
    after_stop = entries[entries.index(stop) :]
    started_after = {
        r.step_key
        for r in after_stop
        if r.dagster_event and r.dagster_event.event_type == E.STEP_START
    }
    assert started_after <= interrupted
    # Every started step ended once, interrupted in its own code on its worker.
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit
    # (the async op's RetryPolicy turns its interrupt into STEP_UP_FOR_RETRY, which
    # does not start again in a stopping run)
    errors = step_errors(entries)
    assert {_cls(error) for _, error in errors} == {"DagsterExecutionInterruptedError"}
    assert audit.succeeded + len(errors) == audit.started
    ran = fault_jobs.ran(markers)
    assert all(len(pids) == 1 for pids in ran.values())
    # Within the grace plus about a second, not after the steps' 60 s: the workers stop
    # their steps at once (a few tenths of a second here), so the grace is slack enough
    # for a loaded machine.
    (end,) = [
        r for r in entries if r.dagster_event and r.dagster_event.event_type == E.RUN_CANCELED
    ]
    assert end.timestamp - stop.timestamp < GRACE_SECONDS + 1


@STORAGES
def test_budgets_hold_on_the_workers(
    dask_cli_cluster: CliCluster, storage_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    cluster, instance, markers = dask_cli_cluster, storage_instance, tmp_path / "markers"
    cluster.wait_for_workers()
    config = _config(
        cluster.address,
        markers,
        8.0,
        "waits_past_budget",
        "works_past_budget",
        step_timeout_seconds=fault_jobs.BUDGET,
    )
    outcome = run_job(fault_jobs.budgets, instance, config)
    assert not outcome.success
    entries = records(instance, outcome.run_id)
    odd = [i for i in range(fault_jobs.WIDTH) if i % 2]
    over = {f"{op}[{i}]" for op in ("waits_past_budget", "works_past_budget") for i in odd}
    errors = step_errors(entries)
    assert {key for key, _ in errors} == over
    assert {_cls(error) for _, error in errors} == {"StepTimeoutError"}
    assert len(errors) == len(over)
    successes = {
        r.step_key
        for r in entries
        if r.dagster_event and r.dagster_event.event_type == E.STEP_SUCCESS
    }
    assert len(successes) == 1 + 2 * (fault_jobs.WIDTH - len(odd))
    # Each stopped at its budget, long before its own 8 s.
    starts = {
        r.step_key: r.timestamp
        for r in entries
        if r.dagster_event and r.dagster_event.event_type == E.STEP_START
    }
    for r in entries:
        if r.step_key in over and r.dagster_event and r.dagster_event.event_type == E.STEP_FAILURE:
            assert fault_jobs.BUDGET <= r.timestamp - starts[r.step_key] + 0.2 < 6.0
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit
    assert all(len(pids) == 1 for pids in fault_jobs.ran(markers).values())
    assert _run_failure_class(entries) in (None, "DagsterExecutionStepExecutionError")


@STORAGES
@pytest.mark.parametrize("written_by", ["workers", "run"])
def test_a_step_that_outlives_the_grace_ends_once(
    dask_cli_cluster: CliCluster,
    storage_instance: dg.DagsterInstance,
    tmp_path: Path,
    written_by: str,
) -> None:
    """The run reports the failure of a step still blocked after the grace, and the
    step's own end, when its C call returns at last (after the run's end), is not stored
    a second time: neither by its worker (`events_written_by: workers`) nor by the run
    process (`run`)."""
    cluster, instance, markers = dask_cli_cluster, storage_instance, tmp_path / "markers"
    cluster.wait_for_workers()
    blocked = GRACE_SECONDS + 4

    def cancel_once_it_started() -> None:
        wait_until(lambda: markers.exists() and any(markers.iterdir()), 120)
        (run,) = instance.get_runs(limit=1)
        instance.report_run_canceling(run)

    canceller = _in_background(cancel_once_it_started)
    config = _config(cluster.address, markers, blocked, "blocks_in_c")
    config["execution"]["config"]["dask"]["events_written_by"] = written_by
    outcome = run_job(fault_jobs.outlives_grace, instance, config)
    canceller.join(timeout=60)
    assert outcome.status == dg.DagsterRunStatus.CANCELED
    # The step returns from its C call on its worker after the run has ended, and tries
    # to store its own end then.
    wait_until(lambda: (markers / "returned").exists(), blocked + 30)
    time.sleep(3)  # what it stores then is written within a second
    entries = records(instance, outcome.run_id)
    ends = [
        r.dagster_event.event_type
        for r in entries
        if r.dagster_event is not None
        and r.step_key == "blocks_in_c"
        and r.dagster_event.event_type in (E.STEP_SUCCESS, E.STEP_FAILURE)
    ]
    assert ends == [E.STEP_FAILURE]
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit


@pytest.mark.parametrize(
    ("storage_instance", "written_by", "released"),
    [
        ("sqlite", "workers", "after they left"),
        ("sqlite", "run", "after they left"),
        ("postgres", "workers", "after they left"),
        ("sqlite", "workers", "while stopped"),
        ("postgres", "workers", "while stopped"),
    ],
    indirect=["storage_instance"],
)
def test_a_worker_that_stops_answering_is_lost_and_stores_nothing_when_it_resumes(
    dask_cli_cluster: CliCluster,
    storage_instance: dg.DagsterInstance,
    tmp_path: Path,
    written_by: str,
    released: str,
) -> None:
    """A worker process stopped as a whole (SIGSTOP) closes no connection: after the
    heartbeat timeout the run takes it as lost, and each step it ran ends once, with
    WorkerLostError. Resumed, it stores nothing more of those steps: neither when they
    are stopped (still waiting for the release) nor when their code ends the moment the
    worker resumes (released while it was stopped), before it could read LOST."""
    cluster, instance, markers = dask_cli_cluster, storage_instance, tmp_path / "markers"
    markers.mkdir()
    release, left = tmp_path / "release", tmp_path / "left"
    left.mkdir()
    cluster.wait_for_workers()
    pids = cluster.worker_pids()
    stopped: dict[str, Any] = {}

    def stop_a_worker_then_resume_it() -> None:
        wait_until(lambda: len(list(markers.iterdir())) >= 12, 120)
        # Stopped in the middle of a write, a worker would hold SQLite's write lock, and
        # no process could store anything (the lost worker's event included) until it
        # is resumed: stop it once no step began for a second.
        _wait_until_no_step_begins(markers, quiet=1.0)
        busy = Counter(pid for ran in fault_jobs.ran(markers).values() for pid in ran)
        pid = busy.most_common(1)[0][0]
        stopped["address"] = next(address for address, p in pids.items() if p == pid)
        os.kill(pid, signal.SIGSTOP)
        try:
            wait_until(lambda: _lost_event(instance) is not None, 60)
            if released == "while stopped":
                release.touch()
        finally:
            os.kill(pid, signal.SIGCONT)
        # "after they left": resumed while its steps still wait for the release, it
        # stops them, its channel closed: they leave their code before any is released.
        # A step whose end it stored would show as a second end.
        there = {(key, pid) for key, ran in fault_jobs.ran(markers).items() if pid in ran}
        wait_until(lambda: there <= fault_jobs.left(left), 60)
        release.touch()

    actor = _in_background(stop_a_worker_then_resume_it)
    op_config = {"marker_dir": str(markers), "release": str(release), "left_dir": str(left)}
    config = {
        "execution": {
            "config": {
                "dask": {
                    "address": cluster.address,
                    "events_written_by": written_by,
                    "heartbeat_timeout_seconds": 3.0,
                },
                "termination_grace_seconds": GRACE_SECONDS,
            }
        },
        "ops": {
            name: {"config": op_config} for name in ("waits_for_release", "works_until_release")
        },
    }
    outcome = run_job(fault_jobs.released, instance, config)
    actor.join(timeout=120)
    assert "address" in stopped
    lost_event = _lost_event(instance)
    assert lost_event is not None
    metadata = lost_event.engine_event_data.metadata
    assert metadata["worker"].value == stopped["address"]
    assert "heartbeat" in (lost_event.message or "")
    lost = set(metadata["lost_steps"].value)
    assert lost
    time.sleep(2)  # anything the resumed worker would still store
    entries = records(instance, outcome.run_id)
    errors = step_errors(entries)
    lost_ends = Counter(key for key, error in errors if error.cls_name == "WorkerLostError")
    assert set(lost_ends) == lost and set(lost_ends.values()) == {1}
    assert {error.cls_name for _, error in errors} == {"WorkerLostError"}
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit
    # The async op's RetryPolicy ran its lost steps again, on the other worker.
    retried = {key for key in lost if key.startswith("waits_for_release[")}
    successes = {
        r.step_key
        for r in entries
        if r.dagster_event and r.dagster_event.event_type == E.STEP_SUCCESS
    }
    assert retried <= successes
    assert _run_failure_class(entries) in (None, "WorkerLostError")
    cluster.wait_for_workers()


def _wait_until_no_step_begins(markers: Path, quiet: float) -> None:
    seen, since = -1, time.monotonic()
    deadline = since + 120
    while time.monotonic() < deadline:
        count = len(list(markers.iterdir()))
        if count != seen:
            seen, since = count, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return
        time.sleep(0.05)
    raise AssertionError(f"steps kept beginning for 120 s ({seen} so far)")


def _lost_event(instance: dg.DagsterInstance) -> Any:
    """The engine event of the latest run saying which worker it lost, if stored yet."""
    runs = instance.get_runs(limit=1)
    if not runs:
        return None
    found = lost_events(list(instance.all_logs(runs[0].run_id, of_type=E.ENGINE_EVENT)))
    return found[0] if found else None
