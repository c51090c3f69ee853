"""The executor's config and op tags are checked before any step starts, and the
defaults left unset are resolved in the process that executes the run."""

from __future__ import annotations

import os

import dagster as dg
import pytest

from dagloop.dagster import async_executor, execute_in_process
from dagloop.dagster.config import AsyncExecutorConfig, ExecutorConfigError
from tests.dagster.conftest import ENGINE_MARK, run_job
from tests.dagster.jobs import termination as jobs

E = dg.DagsterEventType


def test_a_bad_op_tag_fails_the_run_before_any_step_starts(
    instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.bad_tag_job, instance)
    assert not outcome.success
    assert outcome.of_type(E.STEP_START) == []
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    text = str(failure.event_specific_data.error)
    assert "Op 'badly_tagged'" in text and "dagloop/step_timeout_seconds" in text
    assert "'abc'" in text
    assert failure.event_specific_data.error.cls_name == "ExecutorConfigError"


@pytest.mark.parametrize(
    ("key", "value"),
    [("termination_grace_seconds", float("inf")), ("step_timeout_seconds", float("inf"))],
)
def test_non_finite_seconds_are_rejected(key: str, value: float) -> None:
    with pytest.raises(ExecutorConfigError, match=key):
        AsyncExecutorConfig.from_config({"retries": {"enabled": {}}, key: value})


@dg.op
def a_sync_step() -> int:
    return 1


@dg.job(executor_def=async_executor)
def default_config_job() -> None:
    a_sync_step()


def test_sync_threads_is_resolved_where_the_run_executes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The schema leaves it unset, so the job's definition carries no machine's CPU count...
    field = async_executor.config_schema.config_type.fields["sync_threads"]
    assert field.default_value is None
    # ...and the run resolves it from the CPUs of the process executing it.
    monkeypatch.setattr(os, "cpu_count", lambda: 3)
    result = execute_in_process(default_config_job)
    assert result.success
    (engine,) = [
        e.message or ""
        for e in result.all_events
        if e.event_type == E.ENGINE_EVENT and ENGINE_MARK in (e.message or "")
    ]
    assert "; 7 worker threads for sync steps" in engine, engine
