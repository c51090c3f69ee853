"""Issue 2: events reach the caller live, while other steps are still running; and a
watcher of the run (the UI, a sensor) sees every entry, on every storage.

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import asyncio
import threading
import time
from collections.abc import Iterator

import dagster as dg
import pytest
from dagster._core.execution.api import execute_run_iterator  # test-only: the raw stream
from dagster._core.storage.event_log.base import EventLogCursor  # test-only: parse cursors

from dagloop.dagster import async_executor

RELEASE = threading.Event()


@dg.op
async def quick() -> int:
    return 1


@dg.op
async def held_until_caller_saw_quick() -> bool:
    # Released by the test only once it has *received* quick's STEP_SUCCESS; if events
    # were buffered until the end of the run, this would time out and fail.
    if not await asyncio.to_thread(RELEASE.wait, 30):
        raise TimeoutError("the caller never received quick's STEP_SUCCESS while we ran")
    return True


@dg.job(executor_def=async_executor)
def live_job():
    quick()
    held_until_caller_saw_quick()


def test_events_stream_while_steps_run(storage_instance: dg.DagsterInstance) -> None:
    RELEASE.clear()
    recon = dg.reconstructable(live_job)
    run = storage_instance.create_run_for_job(live_job)
    seen: list[str] = []
    for event in execute_run_iterator(recon, run, storage_instance):
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seen.append(event.step_key or "")
            if event.step_key == "quick":
                RELEASE.set()
    assert seen == ["quick", "held_until_caller_saw_quick"]


WIDTH = 60


@dg.op(out=dg.DynamicOut(int))
def spread():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def chatty(context: dg.OpExecutionContext, item: int) -> int:
    context.log.info(f"start {item}")
    await asyncio.sleep(0.005 * (item % 7))
    context.log.info(f"end {item}")
    return item


@dg.op
def total(items: list[int]) -> int:
    return sum(items)


@dg.job(executor_def=async_executor)
def watched_job():
    total(spread().map(chatty).collect())


@pytest.fixture
def reader(storage_instance: dg.DagsterInstance) -> Iterator[dg.DagsterInstance]:
    """Another instance on the same storage (as the UI or a sensor daemon has), or the same
    one for an in-memory event log, which only its own process sees."""
    if not storage_instance.is_persistent:
        yield storage_instance
        return
    with dg.DagsterInstance.get() as other:  # the fixture's DAGSTER_HOME
        assert other is not storage_instance
        yield other


def test_a_watcher_and_a_poller_of_the_run_see_every_entry_in_order(
    storage_instance: dg.DagsterInstance, reader: dg.DagsterInstance
) -> None:
    instance = storage_instance
    run = instance.create_run_for_job(watched_job)
    watched: list[tuple[int, str]] = []

    def on_entry(entry: dg.EventLogEntry, cursor: str) -> None:
        watched.append((EventLogCursor.parse(cursor).storage_id(), entry.run_id))

    reader.watch_event_logs(run.run_id, None, on_entry)
    # A poller resuming from the last record it read, as a UI does: it must never
    # find an entry stored before one it has already read (it would skip it).
    polled: list[int] = []
    running = threading.Event()
    running.set()

    def poll() -> None:
        cursor = None
        while running.is_set():
            page = reader.get_records_for_run(run.run_id, cursor=cursor, limit=1000)
            polled.extend(r.storage_id for r in page.records)
            cursor = page.cursor
            time.sleep(0.01)

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        events = list(execute_run_iterator(dg.reconstructable(watched_job), run, instance))
    finally:
        running.clear()
        poller.join()
    assert any(e.event_type == dg.DagsterEventType.RUN_SUCCESS for e in events)
    stored = [r.storage_id for r in instance.get_records_for_run(run.run_id, limit=10_000).records]
    assert len(stored) > 6 * WIDTH
    page = reader.get_records_for_run(run.run_id, cursor=None, limit=10_000)
    assert polled == stored[: len(polled)]

    deadline = time.monotonic() + 60  # the polling watcher backs off up to 16 s when idle
    while len(watched) < len(stored) and time.monotonic() < deadline:
        time.sleep(0.1)
    reader.end_watch_event_logs(run.run_id, on_entry)
    assert [storage_id for storage_id, _ in watched] == stored
    assert {run_id for _, run_id in watched} == {run.run_id}
    assert [r.storage_id for r in page.records] == stored
