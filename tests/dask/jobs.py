"""Reconstructable jobs for the Dask scale-out tests (loaded by module path on workers)."""

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import dagster as dg

from dagloop.dagster import async_executor

PLACEMENT = "dagloop/placement"
WIDTH = 6


@dg.op
async def source() -> int:
    await asyncio.sleep(0.01)
    return 1


@dg.op(out=dg.DynamicOut(int))
def fan_out(seed: int) -> Any:
    for i in range(WIDTH):
        yield dg.DynamicOutput(seed + i, mapping_key=str(i))


@dg.op
async def slow_async(value: int) -> dict[str, int]:
    await asyncio.sleep(0.5)
    return {"value": value, "pid": os.getpid()}


@dg.op
def cpu_sync(record: dict[str, int]) -> dict[str, int]:
    total = sum(i * i for i in range(20_000))
    return {**record, "cpu": total % 7, "sync_pid": os.getpid()}


@dg.op(tags={PLACEMENT: "local"})
def collect(records: list[dict[str, int]]) -> dict[str, Any]:
    return {
        "values": sorted(r["value"] for r in records),
        "pids": sorted({r["pid"] for r in records} | {r["sync_pid"] for r in records}),
        "collector_pid": os.getpid(),
    }


@dg.job(executor_def=async_executor)
def fanout_job() -> None:
    collect(fan_out(source()).map(slow_async).map(cpu_sync).collect())


def fanout() -> dg.JobDefinition:
    return fanout_job


# -- retries, skips --------------------------------------------------------------------


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2), config_schema={"marker_dir": str})
def flaky(context: dg.OpExecutionContext) -> int:
    marker = Path(context.op_config["marker_dir"]) / f"{context.run_id}-flaky"
    attempts = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(attempts + 1))
    if attempts < 2:
        raise RuntimeError(f"flaky attempt {attempts}")
    return attempts


@dg.op(out={"taken": dg.Out(is_required=False), "not_taken": dg.Out(is_required=False)})
def branch(attempts: int) -> Any:
    yield dg.Output(attempts, "taken")


@dg.op
def after_taken(value: int) -> int:
    return value + 1


@dg.op
def after_not_taken(value: int) -> int:  # pragma: no cover - skipped
    return value


@dg.op
def always_fails() -> int:
    raise ValueError("boom on the cluster")


@dg.op
def downstream_of_failure(value: int) -> int:  # pragma: no cover - never runs
    return value


@dg.job(executor_def=async_executor)
def retries_skips_job() -> None:
    taken, not_taken = branch(flaky())
    after_taken(taken)
    after_not_taken(not_taken)
    downstream_of_failure(always_fails())


def retries_skips() -> dg.JobDefinition:
    return retries_skips_job


# -- termination ------------------------------------------------------------------------


@dg.op
async def sleeps_long() -> None:
    await asyncio.sleep(60)


@dg.op
def blocks_long() -> None:
    time.sleep(60)


@dg.op
async def quick() -> int:
    return 1


@dg.job(executor_def=async_executor)
def long_job() -> None:
    sleeps_long()
    blocks_long()
    quick()


def long() -> dg.JobDefinition:
    return long_job


# -- pools -------------------------------------------------------------------------------


@dg.op(pool="dagloop-dask-pool", tags={"lane": "single"})
async def pooled(value: int) -> float:
    started = time.time()
    await asyncio.sleep(0.3)
    return started


@dg.op(tags={PLACEMENT: "local"})
def pooled_starts(starts: list[float]) -> list[float]:
    return sorted(starts)


@dg.job(executor_def=async_executor)
def pooled_job() -> None:
    pooled_starts(fan_out(source()).map(pooled).collect())


def pools() -> dg.JobDefinition:
    return pooled_job


def not_reconstructable() -> dg.JobDefinition:
    return fanout_job


# -- live events -------------------------------------------------------------------------


@dg.op
async def takes_two_seconds() -> None:
    await asyncio.sleep(2)


@dg.job(executor_def=async_executor)
def live_job() -> None:
    quick()
    takes_two_seconds()


def live() -> dg.JobDefinition:
    return live_job


@dg.op(tags={PLACEMENT: "elsewhere"})
def misplaced() -> None:
    pass


@dg.job(executor_def=async_executor)
def bad_placement_job() -> None:
    misplaced()


def bad_placement() -> dg.JobDefinition:
    return bad_placement_job
