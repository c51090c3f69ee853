"""Issue 2, item 4: failures, Failure metadata, RetryRequested and RetryPolicy."""

import asyncio
import time

import dagster as dg
import pytest

from dagloop.dagster import async_executor
from tests.dagster.conftest import assert_every_started_step_ended, run_job

E = dg.DagsterEventType


@dg.op
async def explode() -> int:
    await asyncio.sleep(0.01)
    raise ValueError("boom in async op")


@dg.op
async def after_explode(value: int) -> int:
    return value


@dg.op
async def independent() -> int:
    await asyncio.sleep(0.2)
    return 7


@dg.op
async def after_independent(value: int) -> int:
    return value + 1


@dg.job(executor_def=async_executor)
def failing_branch_job():
    after_explode(explode())
    after_independent(independent())


def test_failure_skips_downstream_and_independent_branch_completes(
    instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(failing_branch_job, instance)
    assert not outcome.success
    assert outcome.status == dg.DagsterRunStatus.FAILURE
    assert outcome.step_keys(E.STEP_FAILURE) == {"explode"}
    assert outcome.step_keys(E.STEP_SUCCESS) == {"independent", "after_independent"}
    # Dagster abandons (does not start) a step whose input failed.
    assert "after_explode" not in outcome.step_keys(E.STEP_START)
    failure = outcome.of_type(E.STEP_FAILURE)[0]
    assert "boom in async op" in str(failure.step_failure_data.error)
    assert_every_started_step_ended(instance, outcome.run_id)


@dg.op(out=dg.DynamicOut(int))
async def fan_out():
    for i in range(6):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def fragile(item: int) -> int:
    await asyncio.sleep(0.01)
    if item == 3:
        raise RuntimeError(f"mapped item {item} failed")
    return item


@dg.op
async def total(values: list[int]) -> int:
    return sum(values)


@dg.job(executor_def=async_executor)
def failing_map_job():
    total(fan_out().map(fragile).collect())


def test_failure_inside_dynamic_map(instance: dg.DagsterInstance) -> None:
    outcome = run_job(failing_map_job, instance)
    assert not outcome.success
    assert outcome.step_keys(E.STEP_FAILURE) == {"fragile[3]"}
    assert {f"fragile[{i}]" for i in (0, 1, 2, 4, 5)} <= outcome.step_keys(E.STEP_SUCCESS)
    assert "total" not in outcome.step_keys(E.STEP_START)
    assert_every_started_step_ended(instance, outcome.run_id)


@dg.op
async def intentional_failure() -> None:
    await asyncio.sleep(0)
    raise dg.Failure(
        description="the upstream API said no",
        metadata={"status_code": 503, "endpoint": dg.MetadataValue.url("https://api.example")},
    )


@dg.job(executor_def=async_executor)
def failure_metadata_job():
    intentional_failure()


def test_failure_keeps_description_and_metadata(instance: dg.DagsterInstance) -> None:
    outcome = run_job(failure_metadata_job, instance)
    assert not outcome.success
    data = outcome.of_type(E.STEP_FAILURE)[0].step_failure_data
    assert data.user_failure_data is not None
    assert data.user_failure_data.description == "the upstream API said no"
    assert data.user_failure_data.metadata["status_code"] == dg.MetadataValue.int(503)


@dg.op
async def retry_requested(context: dg.OpExecutionContext) -> int:
    await asyncio.sleep(0)
    if context.retry_number < 2:
        raise dg.RetryRequested(max_retries=3, seconds_to_wait=0.1)
    return context.retry_number


@dg.job(executor_def=async_executor)
def retry_requested_job():
    retry_requested()


def test_retry_requested_retries_until_success(instance: dg.DagsterInstance) -> None:
    outcome = run_job(retry_requested_job, instance, outputs=("retry_requested",))
    assert outcome.success
    assert outcome.outputs["retry_requested"] == 2
    assert len(outcome.of_type(E.STEP_UP_FOR_RETRY)) == 2
    assert len(outcome.of_type(E.STEP_RESTARTED)) == 2


RETRY_DELAY = 1.0


@dg.op(
    retry_policy=dg.RetryPolicy(
        max_retries=2,
        delay=RETRY_DELAY,
        backoff=dg.Backoff.EXPONENTIAL,
        jitter=dg.Jitter.PLUS_MINUS,
    )
)
async def flaky(context: dg.OpExecutionContext) -> list[float]:
    await asyncio.sleep(0)
    attempts = [time.time()]
    if context.retry_number < 2:
        raise ConnectionError(f"attempt {context.retry_number} failed")
    return attempts


@dg.op
async def tick(context: dg.OpExecutionContext, previous: list[float]) -> list[float]:
    await asyncio.sleep(0.05)
    return [*previous, time.time()]


@dg.op
async def first_tick() -> list[float]:
    return [time.time()]


@dg.job(executor_def=async_executor)
def retry_policy_job():
    flaky()
    ticks = first_tick()
    for _ in range(10):
        ticks = tick(ticks)


def test_retry_policy_backoff_waits_do_not_block_other_steps(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(retry_policy_job, ephemeral_instance, outputs=("flaky", "tick_10"))
    assert outcome.success
    retries = outcome.of_type(E.STEP_UP_FOR_RETRY)
    assert [e.step_key for e in retries] == ["flaky", "flaky"]
    # Exponential backoff with +/- jitter: the second wait is scheduled longer than zero
    # and Dagster computed it from the policy (delay * 2**attempt, jittered).
    waits = [e.event_specific_data.seconds_to_wait for e in retries]
    assert all(w is not None and w > 0 for w in waits)
    # The chain of ten dependent ops finished while `flaky` was still waiting to retry:
    # retry waits are timers on the loop, not sleeps.
    chain = outcome.outputs["tick_10"]
    assert len(chain) == 11
    (last_attempt_started,) = outcome.outputs["flaky"]
    assert chain[-1] < last_attempt_started


@dg.op(out=dg.DynamicOut(int))
async def many():
    for i in range(20):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def retries_at_once(context: dg.OpExecutionContext, item: int) -> int:
    await asyncio.sleep(0.01 * (item % 3))
    if context.retry_number < 2:
        raise dg.RetryRequested(max_retries=3)  # no wait: the next attempt is ready at once
    return item


@dg.job(executor_def=async_executor)
def immediate_retries_job():
    many().map(retries_at_once)


@pytest.mark.parametrize("step_host", ["greenlet", "thread"])
def test_immediate_retries_of_many_steps(
    ephemeral_instance: dg.DagsterInstance, step_host: str
) -> None:
    # A thread-hosted attempt reports its events asynchronously; its next attempt may
    # start before the previous one is wound down. Neither may be taken for the other.
    config = {"execution": {"config": {"step_host": step_host}}}
    outcome = run_job(immediate_retries_job, ephemeral_instance, run_config=config)
    assert outcome.success
    assert len(outcome.of_type(E.STEP_UP_FOR_RETRY)) == 40
    assert outcome.step_keys(E.STEP_SUCCESS) >= {f"retries_at_once[{i}]" for i in range(20)}
