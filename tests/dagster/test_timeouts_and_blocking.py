"""Issue 5: step time budgets and detection of steps that block the loop."""

import asyncio
import time

import dagster as dg
import pytest

from dagloop.dagster import STEP_TIMEOUT_TAG, async_executor
from tests.dagster.conftest import assert_every_started_step_ended, run_job

E = dg.DagsterEventType


@dg.op(tags={STEP_TIMEOUT_TAG: "0.3"})
async def hung_call() -> int:
    await asyncio.sleep(30)
    return 1


@dg.op
async def quick_call() -> int:
    await asyncio.sleep(0.05)
    return 2


@dg.op
async def uses_default_budget() -> int:
    await asyncio.sleep(30)
    return 3


@dg.job(executor_def=async_executor.configured({"step_timeout_seconds": 0.5}))
def budget_job():
    hung_call()
    quick_call()
    uses_default_budget()


def test_async_steps_over_budget_are_cancelled_and_named(instance: dg.DagsterInstance) -> None:
    started = time.perf_counter()
    outcome = run_job(budget_job, instance)
    assert time.perf_counter() - started < 25  # neither 30 s sleep ran to the end

    assert not outcome.success
    assert outcome.step_keys(E.STEP_SUCCESS) == {"quick_call"}
    failures = {e.step_key: e.step_failure_data.error for e in outcome.of_type(E.STEP_FAILURE)}
    assert set(failures) == {"hung_call", "uses_default_budget"}
    hung = failures["hung_call"]
    message = hung.cause.message if hung.cause else hung.message
    assert "Op 'hung_call'" in message and "0.3 s" in message
    default = failures["uses_default_budget"]
    message = default.cause.message if default.cause else default.message
    assert "Op 'uses_default_budget'" in message and "0.5 s" in message
    assert_every_started_step_ended(instance, outcome.run_id)


@dg.op(
    tags={STEP_TIMEOUT_TAG: "0.2"},
    retry_policy=dg.RetryPolicy(max_retries=2),
)
async def slow_then_fast(context: dg.OpExecutionContext) -> int:
    await asyncio.sleep(30 if context.retry_number == 0 else 0.01)
    return context.retry_number


@dg.job(executor_def=async_executor)
def timeout_retry_job():
    slow_then_fast()


def test_retry_policy_applies_to_a_timed_out_step(ephemeral_instance: dg.DagsterInstance) -> None:
    outcome = run_job(timeout_retry_job, ephemeral_instance, outputs=("slow_then_fast",))
    assert outcome.success
    assert outcome.outputs["slow_then_fast"] == 1
    (retry,) = outcome.of_type(E.STEP_UP_FOR_RETRY)
    assert "exceeded its time budget" in str(retry.event_specific_data.error)


@dg.op(tags={STEP_TIMEOUT_TAG: "0.2"}, retry_policy=dg.RetryPolicy(max_retries=1))
def slow_sync_op(context: dg.OpExecutionContext) -> int:
    if context.retry_number == 0:
        for _ in range(100):  # 10 s in short slices: interrupted in its worker thread
            time.sleep(0.1)
    return 5


@dg.job(executor_def=async_executor)
def sync_budget_job():
    slow_sync_op()


def test_sync_step_over_budget_is_interrupted_and_its_retry_policy_applies(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    started = time.perf_counter()
    outcome = run_job(sync_budget_job, ephemeral_instance, outputs=("slow_sync_op",))
    assert time.perf_counter() - started < 8  # the 10 s loop did not run out
    assert outcome.success
    assert outcome.outputs["slow_sync_op"] == 5
    (retry,) = outcome.of_type(E.STEP_UP_FOR_RETRY)
    error = str(retry.event_specific_data.error)
    assert "Op 'slow_sync_op'" in error and "0.2 s" in error


@dg.op(tags={STEP_TIMEOUT_TAG: "soon"})
async def bad_budget() -> int:
    return 1


@dg.job(executor_def=async_executor)
def bad_budget_job():
    bad_budget()


def test_a_malformed_budget_tag_names_the_step(ephemeral_instance: dg.DagsterInstance) -> None:
    outcome = run_job(bad_budget_job, ephemeral_instance)
    assert not outcome.success
    assert outcome.step_keys(E.STEP_START) == set()
    text = " ".join(str(e.event_specific_data.error) for e in outcome.of_type(E.RUN_FAILURE))
    assert STEP_TIMEOUT_TAG in text and "bad_budget" in text and "'soon'" in text
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    assert failure.event_specific_data.error.cls_name == "ExecutorConfigError"


# -- blocking the loop ------------------------------------------------------------------


@dg.op
async def blocks_the_loop() -> int:
    time.sleep(0.7)  # a blocking call inside async def: every other step waits
    return 1


@dg.op
async def behaves() -> int:
    await asyncio.sleep(0.05)
    return 2


@dg.job(executor_def=async_executor)
def blocking_job():
    blocks_the_loop()
    behaves()


def test_a_step_that_blocks_the_loop_is_named(ephemeral_instance: dg.DagsterInstance) -> None:
    outcome = run_job(blocking_job, ephemeral_instance)
    assert outcome.success
    reports = [
        e for e in outcome.of_type(E.ENGINE_EVENT) if "blocked the event loop" in (e.message or "")
    ]
    assert [e.step_key for e in reports] == ["blocks_the_loop"]
    held = reports[0].engine_event_data.metadata["held_seconds"].value
    assert held == pytest.approx(0.7, abs=0.3)


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("max_concurrent", 0),
        ("sync_threads", -2),
        ("step_timeout_seconds", float("nan")),
        ("step_timeout_seconds", 0.0),
        ("blocked_loop_warning_seconds", -1.0),
    ],
)
def test_out_of_range_config_fails_before_any_step(
    ephemeral_instance: dg.DagsterInstance, key: str, value: float
) -> None:
    # Types are checked by Dagster's config system when the run is created; ranges when
    # the executor is built, which fails the run before any step starts.
    config = {"execution": {"config": {key: value}}}
    outcome = run_job(behaves_job, ephemeral_instance, run_config=config)
    assert not outcome.success
    assert outcome.step_keys(E.STEP_START) == set()
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    error = failure.event_specific_data.error
    text = f"{error.message} {error.cause.message if error.cause else ''}"
    assert f"execution config key '{key}'" in text


def test_unknown_config_key_is_rejected_by_name(ephemeral_instance: dg.DagsterInstance) -> None:
    config = {"execution": {"config": {"max_concurent": 3}}}
    with pytest.raises(dg.DagsterInvalidConfigError, match="max_concurent"):
        run_job(behaves_job, ephemeral_instance, run_config=config)


@dg.job(executor_def=async_executor)
def behaves_job():
    behaves()
