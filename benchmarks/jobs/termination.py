"""Jobs for `benchmarks/termination.py`: what terminating a run costs, per executor.

`async_only`: 20 async ops awaiting 60 s. `mixed`: the same plus a sync op that logs once a
second for 60 s. Each exists for dagloop and for Dagster's in-process executor.
"""

import asyncio
import time

import dagster as dg

from dagloop.dagster import async_executor


@dg.op(out=dg.DynamicOut(int))
def twenty():
    for i in range(20):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def awaits_a_minute(item: int) -> int:
    await asyncio.sleep(60)
    return item


@dg.op
def logs_every_second(context: dg.OpExecutionContext) -> int:
    for i in range(60):
        context.log.info(f"tick {i}")
        time.sleep(1.0)
    return 60


def _async_only() -> None:
    twenty().map(awaits_a_minute)


def _mixed() -> None:
    twenty().map(awaits_a_minute)
    logs_every_second()


async_only_dagloop = dg.job(name="async_only_dagloop", executor_def=async_executor)(_async_only)
mixed_dagloop = dg.job(name="mixed_dagloop", executor_def=async_executor)(_mixed)
async_only_in_process = dg.job(name="async_only_in_process", executor_def=dg.in_process_executor)(
    _async_only
)
mixed_in_process = dg.job(name="mixed_in_process", executor_def=dg.in_process_executor)(_mixed)


@dg.op(out=dg.DynamicOut(int))
def hundred_twenty():
    for i in range(120):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def staggered(item: int) -> int:
    # Completions every 25 ms over 3 s, so a kill lands while entries are being written.
    await asyncio.sleep(0.025 * item)
    return item


@dg.job(executor_def=async_executor)
def kill_dagloop():
    hundred_twenty().map(staggered)


defs = dg.Definitions(
    jobs=[async_only_dagloop, mixed_dagloop, async_only_in_process, mixed_in_process, kill_dagloop]
)
