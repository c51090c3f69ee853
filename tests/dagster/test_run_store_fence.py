"""`RunStore`'s fence (a Dask worker's lease) on each storage with a batch writer: asked
inside a batch's transaction, after its rows are written and before they are committed;
a "no" rolls the batch back, without a retry and without failing the run. And the
barrier the run process passes before it reads what a lost worker stored: it waits for
every fenced write under way, batch or single, and never for a process that died."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.events import StepMaterializationData

from dagloop.dagster._internals import (
    DagsterEventType,
    discard_fenced_write_holds,
    fenced_write_hold,
    wait_for_fenced_writes,
)
from dagloop.dagster._internals.fenced_writes import SQLITE_HOLD_SUFFIX
from dagloop.dagster.event_log.run_store import RunStore


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    loop = asyncio.new_event_loop()
    yield loop
    loop.close()


def _entries(run_id: str, count: int) -> list[dg.EventLogEntry]:
    return [
        dg.EventLogEntry(
            error_info=None,
            level=logging.INFO,
            user_message=f"entry {i}",
            run_id=run_id,
            timestamp=time.time(),
            step_key="a_step",
            job_name="a_job",
        )
        for i in range(count)
    ]


def _stored(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [entry.user_message for entry in instance.all_logs(run_id)]


@pytest.mark.parametrize("storage_instance", ["ephemeral", "sqlite", "postgres"], indirect=True)
def test_the_fence_is_asked_before_the_commit_and_a_yes_stores_the_batch(
    storage_instance: dg.DagsterInstance, loop: asyncio.AbstractEventLoop
) -> None:
    instance, run_id = storage_instance, str(uuid.uuid4())
    # The in-memory storage's writer holds its lock through the transaction: a read from
    # the fence would wait for itself. Elsewhere another connection reads.
    in_memory = type(instance.event_log_storage).__name__ == "InMemoryEventLogStorage"
    seen_at_fence: list[list[str] | None] = []

    def fence() -> bool:
        seen_at_fence.append(None if in_memory else _stored(instance, run_id))
        return True

    store = RunStore(instance, run_id, loop, batched=True, on_failure=None, fence=fence)
    store.store_batch(_entries(run_id, 5))
    # Asked once, inside the transaction: its rows were not committed yet.
    assert seen_at_fence == [None if in_memory else []]
    assert _stored(instance, run_id) == [f"entry {i}" for i in range(5)]
    assert store.withdrawn == 0 and store.failure is None


@pytest.mark.parametrize("storage_instance", ["ephemeral", "sqlite", "postgres"], indirect=True)
def test_a_no_from_the_fence_rolls_the_batch_back_without_a_retry_or_a_failure(
    storage_instance: dg.DagsterInstance, loop: asyncio.AbstractEventLoop
) -> None:
    instance, run_id = storage_instance, str(uuid.uuid4())
    asked = 0

    def fence() -> bool:
        nonlocal asked
        asked += 1
        return False

    failures: list[object] = []
    store = RunStore(instance, run_id, loop, batched=True, on_failure=failures.append, fence=fence)
    store.store_batch(_entries(run_id, 5))
    store.store_one(_entries(run_id, 1)[0], retry=True)
    store.finish()
    assert _stored(instance, run_id) == []
    assert asked == 2  # once per write: no retry
    assert store.withdrawn == 6
    assert store.failure is None and failures == []
    assert store.entries_written == 0


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
def test_the_run_waits_for_a_batch_stalled_past_its_fence_before_it_reads(
    storage_instance: dg.DagsterInstance, loop: asyncio.AbstractEventLoop
) -> None:
    """A worker stopped right after its fence said yes commits when it resumes. The run
    process waits for that commit (SQLite: the shard's write lock; PostgreSQL: the
    run's advisory lock, held shared by each fenced batch) before it reads what the
    worker stored; without waiting, it would read nothing, report the worker's steps,
    and the batch would land after."""
    instance, run_id = storage_instance, str(uuid.uuid4())
    past_the_fence = threading.Event()

    def fence() -> bool:
        past_the_fence.set()
        time.sleep(1.0)  # the worker is stopped here, its transaction open
        return True

    store = RunStore(instance, run_id, loop, batched=True, on_failure=None, fence=fence)
    worker = threading.Thread(target=store.store_batch, args=(_entries(run_id, 3),))
    worker.start()
    assert past_the_fence.wait(10)
    assert _stored(instance, run_id) == []  # a reader does not wait: nothing yet
    assert wait_for_fenced_writes(instance, run_id)
    assert _stored(instance, run_id) == ["entry 0", "entry 1", "entry 2"]
    worker.join(10)


def test_nothing_to_wait_for_where_the_storage_is_not_sqlite(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    assert not wait_for_fenced_writes(ephemeral_instance, str(uuid.uuid4()))


def _materialization(run_id: str) -> dg.EventLogEntry:
    event = dg.DagsterEvent(
        event_type_value=DagsterEventType.ASSET_MATERIALIZATION.value,
        job_name="a_job",
        step_key="a_step",
        event_specific_data=StepMaterializationData(dg.AssetMaterialization("an_asset")),
    )
    return dg.EventLogEntry(
        error_info=None,
        level=logging.DEBUG,
        user_message="",
        run_id=run_id,
        timestamp=time.time(),
        step_key="a_step",
        job_name="a_job",
        dagster_event=event,
    )


def _materialized_in(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    latest = instance.get_latest_materialization_event(dg.AssetKey("an_asset"))
    return [] if latest is None else [latest.run_id]


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
def test_the_run_waits_for_an_asset_event_stalled_past_its_fence_before_it_reads(
    storage_instance: dg.DagsterInstance, loop: asyncio.AbstractEventLoop
) -> None:
    """An asset event is stored through Dagster's instance (the run's shard, and the
    asset index), whose write has no hook before its commit: the fence is asked before
    it. A worker stopped right after that yes writes when it resumes; the run process
    waits for the whole write (the hold around it) before it reads."""
    instance, run_id = storage_instance, str(uuid.uuid4())
    past_the_fence = threading.Event()

    def fence() -> bool:
        past_the_fence.set()
        time.sleep(1.0)  # the worker is stopped here, its write not begun
        return True

    store = RunStore(instance, run_id, loop, batched=True, on_failure=None, fence=fence)
    worker = threading.Thread(
        target=store.store_one, args=(_materialization(run_id),), kwargs={"retry": True}
    )
    worker.start()
    assert past_the_fence.wait(10)
    assert _materialized_in(instance, run_id) == []  # a reader does not wait: nothing yet
    assert wait_for_fenced_writes(instance, run_id)
    assert _materialized_in(instance, run_id) == [run_id]
    assert [e.dagster_event_type for e in instance.all_logs(run_id)] == [
        DagsterEventType.ASSET_MATERIALIZATION
    ]
    worker.join(10)
    store.finish()
    assert store.withdrawn == 0 and store.failure is None


_HOLDER = """
import sys, time
import dagster as dg
from dagloop.dagster._internals import fenced_write_hold
with dg.DagsterInstance.get() as instance:
    with fenced_write_hold(instance, sys.argv[1]).held():
        print("held", flush=True)
        time.sleep(120)
"""


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
def test_a_writer_that_died_holding_its_hold_is_not_waited_for(
    storage_instance: dg.DagsterInstance,
) -> None:
    """A worker's process killed in the middle of a write through the instance: the
    kernel (SQLite's file lock) or the server (PostgreSQL's session lock, once its
    connection drops) lets the hold go, so the run process's wait ends with it, long
    before its 30 s cap."""
    instance, run_id = storage_instance, str(uuid.uuid4())
    assert fenced_write_hold(instance, run_id) is not None
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, run_id], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        waited: list[bool] = []
        waiter = threading.Thread(
            target=lambda: waited.append(wait_for_fenced_writes(instance, run_id))
        )
        waiter.start()
        waiter.join(1.0)
        assert waiter.is_alive()  # the hold is held: the run waits
        os.kill(holder.pid, signal.SIGKILL)
        waiter.join(20.0)
        assert not waiter.is_alive() and waited == [True]
    finally:
        holder.kill()
        holder.wait()


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
def test_a_failed_batch_written_again_entry_by_entry_still_asks_the_fence(
    storage_instance: dg.DagsterInstance, loop: asyncio.AbstractEventLoop
) -> None:
    """A batch the storage rejects is written again one entry at a time, through the
    instance; a worker the run already took as lost stores none of them that way."""
    instance, run_id = storage_instance, str(uuid.uuid4())
    store = RunStore(instance, run_id, loop, batched=True, on_failure=None, fence=lambda: False)

    def rejected(*args: object) -> None:
        raise RuntimeError("the storage rejects the batch")

    store._write_batch = rejected  # type: ignore[assignment]
    store.store_batch(_entries(run_id, 3))
    assert _stored(instance, run_id) == []
    assert store.withdrawn == 3 and store.failure is None


def test_the_file_sqlites_holds_lock_is_removed_once_the_workers_are_gone(
    sqlite_instance: dg.DagsterInstance, loop: asyncio.AbstractEventLoop
) -> None:
    instance, run_id = sqlite_instance, str(uuid.uuid4())
    hold_file = instance.event_log_storage.path_for_shard(run_id) + SQLITE_HOLD_SUFFIX  # type: ignore[attr-defined]
    store = RunStore(instance, run_id, loop, batched=True, on_failure=None, fence=lambda: True)
    store.store_one(_materialization(run_id), retry=True)
    store.finish()
    assert os.path.exists(hold_file)  # the worker's write held it
    discard_fenced_write_holds(instance, run_id)
    assert not os.path.exists(hold_file)
    discard_fenced_write_holds(instance, run_id)  # nothing left: nothing to do
    assert wait_for_fenced_writes(instance, run_id)
    assert _materialized_in(instance, run_id) == [run_id]
