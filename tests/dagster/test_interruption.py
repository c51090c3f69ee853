"""Issue 2 item 9 and issue 5: interrupted runs stop promptly and lose nothing."""

import asyncio
import gc
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dagster as dg
import greenlet
import pytest

from tests.dagster.conftest import assert_every_started_step_ended, dagloop_threads
from tests.dagster.interrupt_audit import abandonment_warnings, interrupt_summary
from tests.dagster.jobs import long_running

E = dg.DagsterEventType
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def reset_job_state() -> None:
    long_running.STARTED.clear()
    long_running.LOOPS.clear()


def _interrupt_when_started(action) -> dict[str, float]:
    stamps: dict[str, float] = {}

    def fire() -> None:
        assert long_running.STARTED.wait(60)
        time.sleep(0.3)  # let the whole fan-out reach its await
        stamps["fired"] = time.monotonic()
        action()

    threading.Thread(target=fire, daemon=True).start()
    return stamps


def _assert_nothing_left_running() -> None:
    # The pool is shut down without joining (a thread stuck in C must not hold up the
    # run's end), so its idle threads exit on their own just after: wait for them.
    deadline = time.monotonic() + 10
    while dagloop_threads() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert dagloop_threads() == [], "worker threads outlived the run"
    (loop,) = set(long_running.LOOPS)
    assert [t for t in asyncio.all_tasks(loop) if not t.done()] == []
    gc.collect()
    alive = [
        g
        for g in gc.get_objects()
        if isinstance(g, greenlet.greenlet)
        and type(g).__name__ == "_BridgedGreenlet"
        and not g.dead
    ]
    assert alive == [], "step greenlets outlived the run"


def _assert_sync_step_interrupted_not_abandoned(instance: dg.DagsterInstance, run_id: str) -> None:
    """The executor's interrupt summary: the one sync op was interrupted in its own code
    (sampled or trapped), not given up on after the grace; no abandonment warning."""
    entries = list(instance.all_logs(run_id))
    summary = interrupt_summary(entries)
    assert summary["sampled"] + summary["trapped"] == 1, summary
    assert summary["abandoned"] == 0, summary
    assert abandonment_warnings(entries) == []


def _execute(instance: dg.DagsterInstance) -> tuple[dg.JobExecutionResult, float]:
    result = dg.execute_job(dg.reconstructable(long_running.long_job), instance=instance)
    return result, time.monotonic()


def test_sigint_cancels_in_flight_async_steps(instance: dg.DagsterInstance) -> None:
    stamps = _interrupt_when_started(lambda: os.kill(os.getpid(), signal.SIGINT))
    result, returned = _execute(instance)

    assert not result.success
    # The async steps slept 60 s and were cancelled; the 10 s sync op was interrupted in
    # its worker thread between two of its 0.1 s sleeps, not abandoned after the grace.
    assert returned - stamps["fired"] < 30  # about 0.5 s on a quiet machine
    _assert_sync_step_interrupted_not_abandoned(instance, result.run_id)
    run = instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.FAILURE
    failures = {e.step_key: e for e in result.all_events if e.event_type == E.STEP_FAILURE}
    assert set(failures) == {f"slow[{i}]" for i in range(long_running.WIDTH)} | {"sync_loop"}
    assert all(
        e.step_failure_data.error.cls_name == "DagsterExecutionInterruptedError"
        for e in failures.values()
    )
    successes = {e.step_key for e in result.all_events if e.event_type == E.STEP_SUCCESS}
    assert successes == {"spread"}
    assert_every_started_step_ended(instance, result.run_id)
    _assert_nothing_left_running()


def test_run_marked_canceling_is_canceled(sqlite_instance: dg.DagsterInstance) -> None:
    def cancel() -> None:
        (run,) = sqlite_instance.get_runs()
        sqlite_instance.report_run_canceling(run)

    stamps = _interrupt_when_started(cancel)
    result, returned = _execute(sqlite_instance)

    assert returned - stamps["fired"] < 30  # about 1 s on a quiet machine
    _assert_sync_step_interrupted_not_abandoned(sqlite_instance, result.run_id)
    run = sqlite_instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.CANCELED
    assert_every_started_step_ended(sqlite_instance, result.run_id)
    _assert_nothing_left_running()


def test_sigterm_to_the_cli_run_worker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    process = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster"),
            "job",
            "execute",
            "-m",
            "tests.dagster.jobs.long_running",
            "-j",
            "long_job",
        ],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        monkeypatch.setenv("DAGSTER_HOME", str(home))
        with dg.DagsterInstance.get() as instance:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                runs = instance.get_runs()
                if runs and _count(instance, runs[0].run_id, E.STEP_START) > long_running.WIDTH:
                    break
                time.sleep(0.2)
            else:
                pytest.fail("the run never started its steps")
            time.sleep(0.3)
            fired = time.monotonic()
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=60)
            elapsed = time.monotonic() - fired

            (run,) = instance.get_runs()
            assert elapsed < 30  # the steps would run 60 s
            assert run.status in (dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
            assert _count(instance, run.run_id, E.STEP_FAILURE) == long_running.WIDTH + 1
            assert_every_started_step_ended(instance, run.run_id)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _count(instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType) -> int:
    return sum(
        1
        for r in instance.all_logs(run_id)
        if r.dagster_event is not None and r.dagster_event.event_type == event_type
    )
