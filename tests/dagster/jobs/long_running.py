"""A job that is still mid-flight when the tests interrupt it."""

import asyncio
import threading
import time

import dagster as dg

from dagloop.dagster import async_executor

#: Set once some async step is awaiting; the tests interrupt the run after that.
STARTED = threading.Event()
LOOPS: list[asyncio.AbstractEventLoop] = []
WIDTH = 10


@dg.op(out=dg.DynamicOut(int))
def spread():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def slow(item: int) -> int:
    LOOPS.append(asyncio.get_running_loop())
    STARTED.set()
    await asyncio.sleep(60)
    return item


@dg.op
def sync_loop() -> int:
    """Synchronous work in short slices: interrupted within one slice, like in-process."""
    for _ in range(100):
        time.sleep(0.1)
    return 1


@dg.op
async def never_reached(values: list[int]) -> int:
    return sum(values)


@dg.job(executor_def=async_executor)
def long_job():
    never_reached(spread().map(slow).collect())
    sync_loop()


defs = dg.Definitions(jobs=[long_job])
