"""Issue 2, item 7: max_concurrent, tag_concurrency_limits and instance pools hold.

Each test measures the peak number of ops inside their body at once.
"""

import asyncio

import dagster as dg
import pytest

from dagloop.dagster import async_executor
from tests.dagster.conftest import Gauge, run_job

WIDTH = 12


GAUGE = Gauge()


@pytest.fixture(autouse=True)
def fresh_gauge() -> None:
    GAUGE.reset()


@dg.op(out=dg.DynamicOut(int))
def spread():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def measured(item: int) -> int:
    GAUGE.enter("all")
    await asyncio.sleep(0.15)
    GAUGE.leave("all")
    return item


@dg.job(executor_def=async_executor)
def wide_job():
    spread().map(measured)


def test_max_concurrent_caps_steps_in_flight(ephemeral_instance: dg.DagsterInstance) -> None:
    config = {"execution": {"config": {"max_concurrent": 3}}}
    outcome = run_job(wide_job, ephemeral_instance, run_config=config)
    assert outcome.success
    assert GAUGE.peak["all"] == 3


def test_without_limits_the_fan_out_overlaps(ephemeral_instance: dg.DagsterInstance) -> None:
    outcome = run_job(wide_job, ephemeral_instance)
    assert outcome.success
    assert GAUGE.peak["all"] > 3


@dg.op(tags={"service": "slow-api"})
async def tagged_call(item: int) -> int:
    GAUGE.enter("slow-api")
    await asyncio.sleep(0.15)
    GAUGE.leave("slow-api")
    return item


@dg.op
async def untagged_call(item: int) -> int:
    GAUGE.enter("untagged")
    await asyncio.sleep(0.15)
    GAUGE.leave("untagged")
    return item


@dg.job(executor_def=async_executor)
def tagged_job():
    fanned = spread()
    fanned.map(tagged_call)
    fanned.map(untagged_call)


def test_tag_concurrency_limits(ephemeral_instance: dg.DagsterInstance) -> None:
    config = {
        "execution": {
            "config": {
                "tag_concurrency_limits": [{"key": "service", "value": "slow-api", "limit": 2}]
            }
        }
    }
    outcome = run_job(tagged_job, ephemeral_instance, run_config=config)
    assert outcome.success
    assert GAUGE.peak["slow-api"] == 2
    assert GAUGE.peak["untagged"] > 2  # the limit applies only to the tagged ops


@dg.op(pool="warehouse")
async def pooled_query(item: int) -> int:
    GAUGE.enter("warehouse")
    await asyncio.sleep(0.15)
    GAUGE.leave("warehouse")
    return item


@dg.job(executor_def=async_executor)
def pooled_job():
    spread().map(pooled_query)


def test_instance_pool_limits_ops_across_the_run(sqlite_instance: dg.DagsterInstance) -> None:
    sqlite_instance.event_log_storage.set_concurrency_slots("warehouse", 2)
    outcome = run_job(pooled_job, sqlite_instance)
    assert outcome.success
    assert GAUGE.peak["warehouse"] == 2
    # Every slot was given back.
    info = sqlite_instance.event_log_storage.get_concurrency_info("warehouse")
    assert info.active_slot_count == 0


def test_thread_hosted_async_steps_are_not_capped_by_sync_threads(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    # Each thread-hosted async step holds a thread while it awaits: the sync pool's
    # size must not become a concurrency limit for async steps.
    config = {"execution": {"config": {"step_host": "thread", "sync_threads": 1}}}
    outcome = run_job(wide_job, ephemeral_instance, run_config=config)
    assert outcome.success
    assert GAUGE.peak["all"] > 3
