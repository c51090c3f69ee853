"""A fan-out whose mapped steps wait behind `max_concurrent`: terminated or killed
mid-way, most of them never started."""

import asyncio
import threading
import time

import dagster as dg

from dagloop.dagster import async_executor

WIDTH = 40
#: Set once a mapped step runs.
STARTED = threading.Event()


@dg.op(out=dg.DynamicOut(int))
def fan_out():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def work(item: int) -> int:
    STARTED.set()
    await asyncio.sleep(0.4)
    return item


@dg.op
def count(values: list[int]) -> int:
    return len(values)


@dg.job(executor_def=async_executor.configured({"max_concurrent": 5}))
def fan_out_job():
    count(fan_out().map(work).collect())


@dg.op
def work_in_process(item: int) -> int:
    STARTED.set()
    time.sleep(0.1)
    return item


@dg.job(executor_def=dg.in_process_executor)
def in_process_fan_out_job():
    """The same fan-out on Dagster's in-process executor, one step after another."""
    count(fan_out().map(work_in_process).collect())


defs = dg.Definitions(jobs=[fan_out_job, in_process_fan_out_job])
