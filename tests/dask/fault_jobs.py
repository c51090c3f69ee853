"""Jobs for the fault tests on a real cluster (loaded by module path on the workers).

A local producer fans out to mapped async and sync steps on the workers. Every op body
leaves a marker file when it begins (`<step key>@<pid>@<unique>` in `marker_dir`), so a
test counts how often each step's code ran, and in which worker process.
"""

import asyncio
import contextlib
import os
import sqlite3
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg

from dagloop.dagster import PLACEMENT_TAG, STEP_TIMEOUT_TAG, async_executor

WIDTH = 24
#: The budget of the steps of `budget_job` (seconds); its odd items take longer.
BUDGET = 1.5
MARKERS = {"marker_dir": str, "seconds": float}


def mark(context: dg.OpExecutionContext) -> None:
    step_key = context.get_step_execution_context().step.key
    marker = f"{step_key}@{os.getpid()}@{uuid.uuid4().hex}"
    (Path(context.op_config["marker_dir"]) / marker).touch()


def ran(marker_dir: Path) -> dict[str, list[int]]:
    """The pids of every execution of each step's code."""
    runs: dict[str, list[int]] = {}
    for path in marker_dir.iterdir():
        step_key, pid, _ = path.name.split("@")
        runs.setdefault(step_key, []).append(int(pid))
    return runs


@dg.op(out=dg.DynamicOut(int), tags={PLACEMENT_TAG: "local"})
def produce() -> Any:
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(config_schema=MARKERS, retry_policy=dg.RetryPolicy(max_retries=1))
async def waits(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    await asyncio.sleep(context.op_config["seconds"])
    return item


@dg.op(config_schema=MARKERS)
def works(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    deadline = time.monotonic() + context.op_config["seconds"]
    while time.monotonic() < deadline:  # Python code between short waits
        time.sleep(0.02)
    return item


@dg.op(tags={PLACEMENT_TAG: "local"})
def gather(values: list[int]) -> int:
    return len(values)


@dg.job(executor_def=async_executor)
def mapped_job() -> None:
    items = produce()
    gather(items.map(waits).collect())
    gather.alias("gather_works")(items.map(works).collect())


def mapped() -> dg.JobDefinition:
    return mapped_job


# -- budgets -------------------------------------------------------------------------------


@dg.op(config_schema=MARKERS, tags={STEP_TIMEOUT_TAG: str(BUDGET)})
async def waits_past_budget(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    await asyncio.sleep(context.op_config["seconds"] if item % 2 else 0.05)
    return item


@dg.op(config_schema=MARKERS)  # its budget: the executor's step_timeout_seconds
def works_past_budget(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    deadline = time.monotonic() + (context.op_config["seconds"] if item % 2 else 0.05)
    while time.monotonic() < deadline:
        time.sleep(0.02)
    return item


@dg.job(executor_def=async_executor)
def budget_job() -> None:
    items = produce()
    items.map(waits_past_budget)
    items.map(works_past_budget)


def budgets() -> dg.JobDefinition:
    return budget_job


# -- a step that outlives the run's grace ------------------------------------------------


@dg.op(config_schema=MARKERS)
def blocks_in_c(context: dg.OpExecutionContext) -> None:
    mark(context)
    try:
        time.sleep(context.op_config["seconds"])  # one C call: not interruptible
    finally:
        (Path(context.op_config["marker_dir"]) / "returned").touch()


@dg.job(executor_def=async_executor)
def outlives_grace_job() -> None:
    blocks_in_c()


def outlives_grace() -> dg.JobDefinition:
    return outlives_grace_job


# -- a worker that stops answering -------------------------------------------------------

#: How long a step of `released_job` waits for its release file at most.
RELEASE_WAIT_SECONDS = 120.0
RELEASED = {"marker_dir": str, "release": str, "left_dir": str}


def _released(context: dg.OpExecutionContext) -> bool:
    return Path(context.op_config["release"]).exists()


@contextlib.contextmanager
def _leaves_a_marker(context: dg.OpExecutionContext) -> Iterator[None]:
    """`<step key>@<pid>` in `left_dir` once the op's code is left, however it ends."""
    try:
        yield
    finally:
        step_key = context.get_step_execution_context().step.key
        (Path(context.op_config["left_dir"]) / f"{step_key}@{os.getpid()}").touch()


def left(left_dir: Path) -> set[tuple[str, int]]:
    """(step key, pid) of each execution of a `released_job` step whose code was left."""
    found = set()
    for path in left_dir.iterdir():
        step_key, pid = path.name.split("@")
        found.add((step_key, int(pid)))
    return found


def _never_released() -> dg.Failure:
    return dg.Failure(f"not released within {RELEASE_WAIT_SECONDS:g} s")


@dg.op(config_schema=RELEASED, retry_policy=dg.RetryPolicy(max_retries=1))
async def waits_for_release(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    with _leaves_a_marker(context):
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while not _released(context):
            if time.monotonic() > deadline:
                raise _never_released()
            await asyncio.sleep(0.05)
    return item


@dg.op(config_schema=RELEASED)
def works_until_release(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    with _leaves_a_marker(context):
        deadline = time.monotonic() + RELEASE_WAIT_SECONDS
        while not _released(context):
            if time.monotonic() > deadline:
                raise _never_released()
            time.sleep(0.05)
    return item


@dg.job(executor_def=async_executor)
def released_job() -> None:
    items = produce()
    gather(items.map(waits_for_release).collect())
    gather.alias("gather_works")(items.map(works_until_release).collect())


def released() -> dg.JobDefinition:
    return released_job


# -- a worker stopped while it holds SQLite's write lock ----------------------------------

HOLDS = {"marker_dir": str}


@dg.op(config_schema=HOLDS)
def holds_the_event_log(context: dg.OpExecutionContext) -> None:
    """Takes the write lock of the run's SQLite event log, as a worker's batch writer
    does inside a commit, leaves `holding@<pid>` in `marker_dir`, and keeps the lock until
    its process stops (the test stops it there)."""
    storage: Any = context.instance.event_log_storage
    connection = sqlite3.connect(storage.path_for_shard(context.run_id), timeout=60)
    connection.isolation_level = None
    connection.execute("BEGIN IMMEDIATE")
    (Path(context.op_config["marker_dir"]) / f"holding@{os.getpid()}").touch()
    time.sleep(RELEASE_WAIT_SECONDS)
    connection.rollback()


@dg.job(executor_def=async_executor)
def holds_the_log_job() -> None:
    holds_the_event_log()
    gather(produce().map(works).collect())


def holds_the_log() -> dg.JobDefinition:
    return holds_the_log_job
