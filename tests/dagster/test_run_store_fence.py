"""`RunStore`'s fence (a Dask worker's lease) on each storage with a batch writer: asked
inside a batch's transaction, after its rows are written and before they are committed;
a "no" rolls the batch back, without a retry and without failing the run."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator

import dagster as dg
import pytest

from dagloop.dagster._internals import wait_for_run_shard_writers
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
    assert wait_for_run_shard_writers(instance, run_id)
    assert _stored(instance, run_id) == ["entry 0", "entry 1", "entry 2"]
    worker.join(10)


def test_nothing_to_wait_for_where_the_storage_is_not_sqlite(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    assert not wait_for_run_shard_writers(ephemeral_instance, str(uuid.uuid4()))
