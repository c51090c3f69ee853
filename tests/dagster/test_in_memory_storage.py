"""What dagloop's batch writer for the ephemeral instance's in-memory event log relies on:
it must store what `InMemoryEventLogStorage.store_event` stores and call the run's
watchers as it does, each entry with the cursor of its row. Fails loudly if Dagster
changes that storage's shape (`_storage_id`, `_handlers`, the class).

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import uuid
from collections.abc import Callable

import dagster as dg
from dagster._core.storage.event_log.base import EventLogCursor  # test-only: parse cursors

from dagloop.dagster import async_executor
from dagloop.dagster._internals import (
    EventLogEntry,
    run_shard_batch_writer,
    writes_to_run_shard_only,
)
from tests.dagster.conftest import run_job


@dg.op(out=dg.DynamicOut(int))
def two():
    yield dg.DynamicOutput(1, mapping_key="a")
    yield dg.DynamicOutput(2, mapping_key="b")


@dg.op
async def logs(context: dg.OpExecutionContext, item: int) -> int:
    context.log.info(f"item {item}")
    return item


@dg.job(executor_def=async_executor)
def small_job():
    two().map(logs).collect()


Seen = list[tuple[int, EventLogEntry]]


def _watch(instance: dg.DagsterInstance, run_id: str) -> tuple[Seen, Callable[..., None]]:
    seen: Seen = []

    def on_entry(entry: EventLogEntry, cursor: str) -> None:
        seen.append((EventLogCursor.parse(cursor).storage_id(), entry))

    instance.watch_event_logs(run_id, None, on_entry)
    return seen, on_entry


def test_batch_writer_stores_and_tells_watchers_what_store_event_does(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    instance = ephemeral_instance
    storage = instance.event_log_storage
    assert type(storage).__name__ == "InMemoryEventLogStorage"
    write = run_shard_batch_writer(instance)
    assert write is not None

    outcome = run_job(small_job, instance)
    assert outcome.success
    records = instance.get_records_for_run(outcome.run_id, limit=10_000).records
    batchable = [r.event_log_entry for r in records if writes_to_run_shard_only(r.event_log_entry)]
    assert len(batchable) > 20

    one_by_one, batched = str(uuid.uuid4()), str(uuid.uuid4())
    seen_one, on_one = _watch(instance, one_by_one)
    seen_batched, on_batched = _watch(instance, batched)
    for entry in batchable:
        storage.store_event(entry._replace(run_id=one_by_one))
    write(batched, [e._replace(run_id=batched) for e in batchable[:7]])
    write(batched, [e._replace(run_id=batched) for e in batchable[7:]])
    instance.end_watch_event_logs(one_by_one, on_one)
    instance.end_watch_event_logs(batched, on_batched)

    for run_id, seen in ((one_by_one, seen_one), (batched, seen_batched)):
        stored = instance.get_records_for_run(run_id, limit=10_000).records
        expected = [e._replace(run_id=run_id) for e in batchable]
        assert [r.event_log_entry for r in stored] == expected
        # Every watcher call names the entry's own row: a watcher resuming from the
        # last cursor it saw neither skips nor repeats an entry.
        assert seen == [(r.storage_id, r.event_log_entry) for r in stored]
