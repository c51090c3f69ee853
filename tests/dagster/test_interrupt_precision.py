"""Interrupts land only in the op's own code: exactly one terminal event per step, a
step's time budget fails that step alone, steps that never started stay silent.

Every test runs real Dagster runs on real instances; `interrupt_audit.py` audits the
stored event logs.
"""

from __future__ import annotations

import logging
import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dagloop.dagster.attempts import AttemptTable
from tests.conftest import instance_in_home
from tests.dagster.conftest import assert_every_started_step_ended, run_job
from tests.dagster.interrupt_audit import (
    GRACE_SECONDS,
    audit_run,
    cancel_when,
    launch_cli,
    signal_cli_at_random,
    terminate_in_process,
)
from tests.dagster.jobs import interrupts as jobs
from tests.dagster.jobs import termination as termination_jobs

E = dg.DagsterEventType
#: Room for a loaded 2-core machine on top of the grace period, in seconds.
MARGIN = 25.0


@pytest.fixture(autouse=True)
def reset_job_state() -> Iterator[None]:
    jobs.STARTED.clear()
    termination_jobs.RELEASE.clear()
    termination_jobs.STARTED.clear()
    yield
    termination_jobs.RELEASE.set()


# -- terminations at random moments ------------------------------------------------------


def test_canceling_at_random_moments_ends_every_started_step_exactly_once(
    tmp_path: Path,
) -> None:
    """20 runs of sync generator ops, sync ops doing locking work and async ops, each
    marked CANCELING (the UI's Terminate) at a random moment."""
    rng = random.Random(16)
    interrupted_sync_steps = 0
    with instance_in_home(tmp_path / "home", "") as instance:
        for _ in range(20):
            audit, seconds = terminate_in_process(instance, rng)
            assert audit.exact, audit
            assert audit.status in ("CANCELED", "SUCCESS"), audit
            assert seconds < 4.0 + GRACE_SECONDS + MARGIN
            assert jobs.held_locks() == []
            interrupted_sync_steps += audit.failures["DagsterExecutionInterruptedError"]
    # The moments were spread enough to catch steps mid-work.
    assert interrupted_sync_steps >= 10


def test_sigterm_at_random_moments_ends_every_started_step_exactly_once(
    tmp_path: Path,
) -> None:
    """10 `dagster job execute` processes of the same job sent SIGTERM at a random
    moment (a run launcher terminating its run worker)."""
    rng = random.Random(1616)
    home = tmp_path / "home"
    with instance_in_home(home, ""):
        pass
    signalled = 0
    for _ in range(10):
        outcome = signal_cli_at_random(home, rng, signal.SIGTERM)
        assert outcome.audit.exact, outcome.audit
        assert outcome.held_locks == [], outcome
        assert outcome.exit_seconds < GRACE_SECONDS + MARGIN
        signalled += outcome.signalled
    assert signalled >= 8


# -- a step's time budget is its own -----------------------------------------------------


def test_an_over_budget_sync_generator_fails_alone(sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.over_budget_job, sqlite_instance)
    assert outcome.step_keys(E.STEP_SUCCESS) == {"sleeps_two_seconds", "waits_a_second"}
    (failure,) = outcome.of_type(E.STEP_FAILURE)
    assert failure.step_key == "over_budget_generator"
    error = failure.step_failure_data.error
    assert error is not None and error.cause is not None
    assert error.cause.cls_name == "StepTimeoutError"
    assert "exceeded its time budget of 0.5 s" in error.cause.message
    audit = audit_run(sqlite_instance, outcome.run_id)
    assert audit.exact, audit
    # The timeout never became the run's failure: nothing cancelled the other steps.
    messages = [e.message or "" for e in outcome.events]
    assert not any("cancelling" in m and "in-flight" in m for m in messages)
    assert jobs.held_locks() == []


def test_an_over_budget_step_is_retried_under_its_retry_policy(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.over_budget_retry_job, sqlite_instance)
    assert outcome.success
    assert [e.step_key for e in outcome.of_type(E.STEP_UP_FOR_RETRY)] == ["over_budget_then_quick"]
    assert outcome.step_keys(E.STEP_SUCCESS) == {
        "over_budget_then_quick",
        "takes_each[one]",
        "sleeps_two_seconds",
    }
    assert audit_run(sqlite_instance, outcome.run_id).exact


def test_a_budget_counts_from_the_step_start_not_the_wait_for_a_thread(
    instance: dg.DagsterInstance,
) -> None:
    """Eight 1 s sync steps on two threads, each with a 3 s budget: the last ones wait
    about 3 s for a thread, and still succeed."""
    outcome = run_job(jobs.waits_for_threads_job, instance)
    assert outcome.success
    assert len(outcome.step_keys(E.STEP_SUCCESS)) == 9


# -- steps that never started ------------------------------------------------------------


def test_steps_still_waiting_for_a_thread_are_not_run_and_report_nothing(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    cancel_when(sqlite_instance, jobs.STARTED, 0.5)
    outcome = run_job(jobs.queued_sync_steps_job, sqlite_instance)
    assert outcome.status == dg.DagsterRunStatus.CANCELED
    started = outcome.step_keys(E.STEP_START) - {"twelve"}
    failed = outcome.step_keys(E.STEP_FAILURE)
    # Two threads: two mapped steps ran and were interrupted; the ten others got no
    # event at all, as steps Dagster's executors never launched.
    assert len(started) == 2 and failed == started
    mapped = {e.step_key for e in outcome.events if e.step_key and e.step_key != "twelve"}
    assert mapped == started
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


# -- bad limits fail fast ----------------------------------------------------------------


@pytest.mark.parametrize("limit", [0, -3])
def test_a_tag_concurrency_limit_below_one_is_rejected_before_any_step(
    ephemeral_instance: dg.DagsterInstance, limit: int
) -> None:
    config = {
        "execution": {
            "config": {
                "tag_concurrency_limits": [
                    {"key": "database", "value": "pg", "limit": 2},
                    {"key": "api", "limit": limit},
                ]
            }
        }
    }
    outcome = run_job(jobs.plain_job, ephemeral_instance, run_config=config)
    assert not outcome.success
    assert outcome.of_type(E.STEP_START) == []
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    text = str(failure.event_specific_data.error)
    assert "tag_concurrency_limits[1].limit" in text and "'api'" in text, text


# -- the second line of defence: one terminal event per attempt, enforced ----------------


def test_a_second_terminal_event_is_dropped_and_reported(
    storage_instance: dg.DagsterInstance,
) -> None:
    """A hook logs a second STEP_SUCCESS for its step (as a bug in step code would): it
    is not stored, and a warning engine event says so."""
    outcome = run_job(jobs.duplicating_hook_job, storage_instance)
    assert outcome.success
    records = list(storage_instance.all_logs(outcome.run_id))
    successes = [r for r in records if r.dagster_event_type == E.STEP_SUCCESS]
    assert [r.step_key for r in successes] == ["reported_twice"]
    warnings = [r for r in records if "second terminal event" in (r.message or "")]
    assert len(warnings) == 1 and warnings[0].level == logging.WARNING
    assert "'reported_twice'" in warnings[0].message
    assert audit_run(storage_instance, outcome.run_id).exact


def test_storage_admits_one_terminal_event_per_attempt(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    """Replays a real run's events (with a retried step) through an attempt table, each
    one twice, launching each attempt before its opening event as the orchestrator
    does: the second copy of every terminal event is dropped, nothing else is."""
    outcome = run_job(jobs.over_budget_retry_job, sqlite_instance)
    assert outcome.success
    dropped: list[tuple[str, str]] = []
    table: AttemptTable[None] = AttemptTable()
    table.set_drop_report(lambda key, kind: dropped.append((key, kind)))
    admitted = []
    for event in outcome.events:
        if event.event_type in (E.STEP_START, E.STEP_RESTARTED):
            assert event.step_key is not None
            table.launch(event.step_key, None)
        admitted += [event for _ in range(2) if table.admit(event)]
    terminal = {E.STEP_SUCCESS, E.STEP_FAILURE, E.STEP_UP_FOR_RETRY}
    expected_drops = [
        (e.step_key, e.event_type_value) for e in outcome.events if e.event_type in terminal
    ]
    assert any(e.event_type == E.STEP_UP_FOR_RETRY for e in outcome.events)
    assert dropped == expected_drops and table.dropped_stored == len(expected_drops)
    assert len(admitted) == 2 * len(outcome.events) - len(expected_drops)


# -- errors that point at the user's code -----------------------------------------------


def test_an_abandoned_steps_failure_shows_where_its_thread_was_stuck(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    cancel_when(sqlite_instance, termination_jobs.STARTED, 0.3)
    outcome = run_job(termination_jobs.stuck_job, sqlite_instance)
    (failure,) = [e for e in outcome.of_type(E.STEP_FAILURE) if e.step_key == "blocked_in_c"]
    error = failure.step_failure_data.error
    assert error is not None
    stack = "".join(error.stack)
    # The op's own line where the thread waited, and nothing of the orchestrator.
    assert "termination.py" in stack and "RELEASE.wait(timeout=600)" in stack, stack
    assert "orchestrator.py" not in stack
    assert "did not stop within 1 s" in error.message


def test_the_console_shows_step_failures_during_the_grace_period(tmp_path: Path) -> None:
    """Ctrl-C in a terminal signals the whole process group, which kills the process
    that mirrors the run's captured output to the console. The step failures and the
    abandonment after the grace period still reach the console, in order."""
    home = tmp_path / "home"
    with instance_in_home(home, ""):
        pass
    child = launch_cli(
        home,
        "tests.dagster.jobs.termination",
        "stuck_job",
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's foreground job
    )
    lines: list[str] = []
    assert child.stdout is not None
    for line in child.stdout:
        lines.append(line)
        if "stuck before the release" in line:
            break
    time.sleep(0.5)
    os.killpg(child.pid, signal.SIGINT)
    lines.extend(child.stdout)
    child.wait(timeout=60)
    console = "".join(lines)
    after = console[console.index("stuck before the release") :]
    waits_failed = after.find("waits_async - STEP_FAILURE")
    abandoned = after.find("was still running synchronous code")
    blocked_failed = after.find("blocked_in_c - STEP_FAILURE")
    assert -1 not in (waits_failed, abandoned, blocked_failed), after[-3000:]
    assert waits_failed < abandoned < blocked_failed
    # Nothing is left for the garbage collector to report about the abandoned step.
    assert "Exception ignored" not in console and "GeneratorExit" not in console
