"""Steps that print their own marker lines, interleaved with awaits and sleeps.

Used by tests/dagster/test_compute_logs.py and by the browser test, which serves this file
with dagster-webserver.
"""

from __future__ import annotations

import asyncio
import random
import sys
import time

import dagster as dg

from dagloop.dagster import STEP_TIMEOUT_TAG, async_executor

ASYNC_STEPS = 50
SYNC_STEPS = 10
LINES = 6


def marker(step: str, line: int) -> str:
    return f"marker {step} line {line}"


def mapped_steps() -> dict[str, str]:
    """The mapped steps of `print_and_gather`, by step key: the name each prints."""
    names = [f"a{i:02d}" for i in range(ASYNC_STEPS)] + [f"s{i:02d}" for i in range(SYNC_STEPS)]
    return {(f"print_async[{n}]" if n.startswith("a") else f"print_sync[{n}]"): n for n in names}


@dg.op(out=dg.DynamicOut(str))
async def spread_async():
    for i in range(ASYNC_STEPS):
        yield dg.DynamicOutput(f"a{i:02d}", mapping_key=f"a{i:02d}")


@dg.op(out=dg.DynamicOut(str))
def spread_sync():
    for i in range(SYNC_STEPS):
        yield dg.DynamicOutput(f"s{i:02d}", mapping_key=f"s{i:02d}")


async def _child(name: str, line: int) -> None:
    # A task the op starts copies its context: still the op's step.
    await asyncio.sleep(random.uniform(0, 0.01))
    print(marker(name, line))


@dg.op
async def print_async(name: str) -> str:
    for line in range(LINES):
        if line == 3:
            await asyncio.create_task(_child(name, line))
        elif line == 4:
            sys.stderr.write(f"{marker(name, line)}\n")
        else:
            print(marker(name, line))
        await asyncio.sleep(random.uniform(0.005, 0.05))
    return name


@dg.op
def print_sync(name: str) -> str:
    for line in range(LINES):
        if line == 4:
            print(marker(name, line), file=sys.stderr)
        else:
            print(marker(name, line))
        time.sleep(random.uniform(0.005, 0.05))
    return name


@dg.op
def gather(async_names: list[str], sync_names: list[str]) -> int:
    print("outside any mapped step")
    return len(async_names) + len(sync_names)


PER_STEP = {"compute_logs": "per_step"}


def print_and_gather() -> None:
    """The steps of `printing_job`, composed inside a job's body (of any executor)."""
    gather(
        spread_async().map(print_async).collect(),
        spread_sync().map(print_sync).collect(),
    )


@dg.job(executor_def=async_executor.configured({"sync_threads": SYNC_STEPS, **PER_STEP}))
def printing_job():
    print_and_gather()


@dg.op
async def prints_then_fails() -> None:
    print(marker("fails", 0))
    await asyncio.sleep(0.01)
    print(marker("fails", 1))
    raise RuntimeError("boom")


@dg.op(tags={STEP_TIMEOUT_TAG: "0.5"})
async def prints_then_hangs() -> None:
    print(marker("hangs", 0))
    await asyncio.sleep(0.01)
    print(marker("hangs", 1))
    await asyncio.sleep(60)


@dg.op
def sync_prints_then_fails() -> None:
    print(marker("sync_fails", 0))
    time.sleep(0.01)
    print(marker("sync_fails", 1))
    raise ValueError("sync boom")


@dg.job(executor_def=async_executor.configured(PER_STEP))
def ending_badly_job():
    prints_then_fails()
    prints_then_hangs()
    sync_prints_then_fails()


@dg.op
async def one() -> None:
    print(marker("one", 0))


@dg.job(executor_def=async_executor.configured({"compute_logs": "per_run"}))
def per_run_job():
    one()
