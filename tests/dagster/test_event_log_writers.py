"""`RunEventLog`'s write strategies, driven directly on real instances: the loop writer
(in-memory storage of an ephemeral instance), the writer thread (SQLite) and direct
writes (SQLite, `event_log_writes: direct`). Whole runs through them are in
test_event_log.py and test_termination.py.
"""

import asyncio
import logging
import shutil
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from dagloop.dagster._internals import encode_entry
from dagloop.dagster.event_log import EventLogWriteError, RunEventLog, run_store
from tests.dagster.conftest import persistent_sqlite_instance

ET = dg.DagsterEventType
WRITER_THREAD = "dagloop-event-writer"
THREADS = 4
PER_THREAD = 60


@dg.op
def noop() -> None:
    pass


@dg.job
def writers_job() -> None:
    noop()


#: Strategy -> (storage, batched).
STRATEGIES = {"loop": ("ephemeral", True), "thread": ("sqlite", True), "direct": ("sqlite", False)}


@pytest.fixture(params=list(STRATEGIES))
def strategy(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Any, bool, str]]:
    """(instance, batched, strategy name) for each write strategy."""
    storage, batched = STRATEGIES[request.param]
    if storage == "ephemeral":
        with dg.DagsterInstance.ephemeral() as instance:
            yield instance, batched, request.param
    else:
        for instance in persistent_sqlite_instance(tmp_path):
            yield instance, batched, request.param


def _entry(run_id: str, message: str) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None,
        level=logging.INFO,
        user_message=message,
        run_id=run_id,
        timestamp=time.time(),
        job_name=writers_job.name,
    )


def _log(instance: dg.DagsterInstance, run_id: str, message: str) -> None:
    """Log a user message of the run as Dagster's log manager does."""
    instance.handle_new_event(_entry(run_id, message))


def _report_run_start(instance: dg.DagsterInstance, run_id: str) -> None:
    """A run event: also written elsewhere than the run's event log, so its caller waits."""
    event = dg.DagsterEvent(event_type_value=ET.RUN_START.value, job_name=writers_job.name)
    instance.report_dagster_event(event, run_id=run_id)


def _stored(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    """The run's stored entries, in storage order: a user message, or an event's type."""
    records = instance.get_records_for_run(run_id, limit=100_000).records
    return [
        r.event_log_entry.dagster_event_type.value
        if r.event_log_entry.dagster_event_type
        else r.event_log_entry.user_message
        for r in records
    ]


def _drive(
    instance: dg.DagsterInstance,
    batched: bool,
    scenario: Callable[[RunEventLog, str], Awaitable[Any]],
    on_failure: Callable[[EventLogWriteError], None] | None = None,
) -> tuple[RunEventLog, str, Any]:
    """Run `scenario` on a started event log of a new run, on an event loop of its own;
    the log is closed after it."""
    run_id = instance.create_run_for_job(writers_job).run_id

    async def main() -> tuple[RunEventLog, Any]:
        log = RunEventLog(
            instance, run_id, asyncio.get_running_loop(), batched=batched, on_failure=on_failure
        )
        log.start()
        try:
            result = await scenario(log, run_id)
        finally:
            await log.aclose()
        return log, result

    log, result = asyncio.run(main())
    return log, run_id, result


def test_entries_of_many_threads_are_stored_once_in_each_threads_order(
    strategy: tuple[dg.DagsterInstance, bool, str],
) -> None:
    instance, batched, name = strategy

    async def scenario(log: RunEventLog, run_id: str) -> tuple[list[str], bool]:
        def log_from_thread(thread: int) -> None:
            for n in range(PER_THREAD):
                _log(instance, run_id, f"t{thread} {n}")

        await asyncio.gather(*(asyncio.to_thread(log_from_thread, t) for t in range(THREADS)))
        for n in range(PER_THREAD):
            _log(instance, run_id, f"loop {n}")
        writer_thread = any(t.name == WRITER_THREAD for t in threading.enumerate())
        await log.barrier()
        return _stored(instance, run_id), writer_thread

    log, run_id, (after_barrier, writer_thread) = _drive(instance, batched, scenario)
    # The barrier returned once every entry queued before it was stored.
    assert len(after_barrier) == (THREADS + 1) * PER_THREAD
    assert _stored(instance, run_id) == after_barrier
    for source in [*(f"t{t}" for t in range(THREADS)), "loop"]:
        mine = [m for m in after_barrier if m.split()[0] == source]
        assert mine == [f"{source} {n}" for n in range(PER_THREAD)]
    assert log.store.entries_written == len(after_barrier)
    if batched:
        assert log.store.writes < log.store.entries_written / 2
    else:
        assert log.store.writes == log.store.entries_written  # one write per entry, as Dagster does
    # In-memory storage is written on the loop's thread; elsewhere a thread writes.
    assert writer_thread is (name != "loop")
    assert log.store.failure is None
    assert "handle_new_event" not in vars(instance)


def test_a_run_event_is_stored_after_every_entry_before_it_when_its_call_returns(
    strategy: tuple[dg.DagsterInstance, bool, str],
) -> None:
    instance, batched, _ = strategy

    async def scenario(log: RunEventLog, run_id: str) -> tuple[list[str], Any]:
        def step() -> tuple[list[str], Any]:
            for n in range(20):
                _log(instance, run_id, f"before {n}")
            _report_run_start(instance, run_id)
            run = instance.get_run_by_id(run_id)
            return _stored(instance, run_id), run.status if run else None

        return await asyncio.to_thread(step)

    _, _, (stored, status) = _drive(instance, batched, scenario)
    assert stored == [*(f"before {n}" for n in range(20)), ET.RUN_START.value]
    assert status == dg.DagsterRunStatus.STARTED


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    yield from persistent_sqlite_instance(tmp_path)


def test_a_caller_that_waits_for_its_entry_stores_it_in_its_own_thread(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    """With a writer thread, a run event's caller stores the queue up to its entry itself
    (as Dagster stores an entry in the thread that logs it) instead of waiting for the
    writer thread; what is queued after it is still stored, in order."""
    instance = sqlite_instance

    async def scenario(log: RunEventLog, run_id: str) -> tuple[dict[str, str], str]:
        stored_by: dict[str, str] = {}

        def listener(entry: dg.EventLogEntry) -> None:
            kind = entry.dagster_event_type
            stored_by.setdefault(kind.value if kind else entry.user_message, _thread_name())

        instance.add_event_listener(run_id, listener)

        def step() -> str:
            for n in range(20):
                _log(instance, run_id, f"before {n}")
            _report_run_start(instance, run_id)
            _log(instance, run_id, "after")
            return _thread_name()

        return stored_by, await asyncio.to_thread(step)

    _, run_id, (stored_by, step_thread) = _drive(instance, True, scenario)
    assert stored_by[ET.RUN_START.value] == step_thread != WRITER_THREAD
    assert stored_by["after"] == WRITER_THREAD
    expected = [*(f"before {n}" for n in range(20)), ET.RUN_START.value, "after"]
    assert _stored(instance, run_id) == expected


def _thread_name() -> str:
    return threading.current_thread().name


def test_callbacks_run_on_the_loop_in_order_once_the_entries_before_them_are_stored(
    strategy: tuple[dg.DagsterInstance, bool, str],
) -> None:
    """As the Dask runner hands in its workers' entries (encoded as their rows, in
    batches) and other messages."""
    instance, batched, _ = strategy
    batches, per_batch = 5, 10

    async def scenario(log: RunEventLog, run_id: str) -> tuple[list[tuple[int, int, int]], int]:
        seen: list[tuple[int, int, int]] = []
        done = asyncio.Event()

        def called(batch: int) -> None:
            seen.append((batch, threading.get_ident(), len(_stored(instance, run_id))))

        storage = instance.event_log_storage

        def worker() -> None:
            for batch in range(batches):
                log.store_encoded(
                    [
                        encode_entry(storage, _entry(run_id, f"{batch} {n}"))
                        for n in range(per_batch)
                    ]
                )
                log.after_written(lambda batch=batch: called(batch))  # type: ignore[misc]
            log.after_written(done.set)

        await asyncio.to_thread(worker)
        await done.wait()
        return seen, threading.get_ident()

    _, run_id, (seen, loop_thread) = _drive(instance, batched, scenario)
    assert [batch for batch, _, _ in seen] == list(range(batches))
    assert {thread for _, thread, _ in seen} == {loop_thread}
    for batch, _, stored in seen:
        assert stored >= (batch + 1) * per_batch
    expected = [f"{b} {n}" for b in range(batches) for n in range(per_batch)]
    assert _stored(instance, run_id) == expected


def test_a_quarantined_threads_entries_are_dropped_until_it_is_released(
    strategy: tuple[dg.DagsterInstance, bool, str],
) -> None:
    instance, batched, _ = strategy
    with ThreadPoolExecutor(1) as step_thread:
        thread_id = step_thread.submit(threading.get_ident).result()

        async def scenario(log: RunEventLog, run_id: str) -> None:
            def log_there(message: str) -> None:
                step_thread.submit(_log, instance, run_id, message).result()

            log_there("before quarantine")
            log.quarantined.add(thread_id)
            log_there("while quarantined")
            _log(instance, run_id, "from the loop")
            await log.barrier()

        log, run_id, _ = _drive(instance, batched, scenario)
        # Closed, but the quarantined thread's entries are still taken (and dropped).
        assert "handle_new_event" in vars(instance)
        step_thread.submit(_log, instance, run_id, "after the run, quarantined").result()
        log.quarantined.release(thread_id)
        assert "handle_new_event" not in vars(instance)
        step_thread.submit(_log, instance, run_id, "after release").result()
    assert _stored(instance, run_id) == ["before quarantine", "from the loop", "after release"]


@pytest.mark.parametrize("batched", [True, False], ids=["thread", "direct"])
def test_a_storage_outage_is_reported_and_the_lost_entries_are_stored_at_the_end(
    sqlite_instance: dg.DagsterInstance, batched: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(run_store, "RETRY_SECONDS", 0.2)
    instance = sqlite_instance
    failures: list[EventLogWriteError] = []

    async def scenario(log: RunEventLog, run_id: str) -> None:
        _log(instance, run_id, "stored")
        await log.barrier()
        # The run's SQLite shard becomes unopenable: a directory stands in its place.
        shard = Path(instance.root_directory) / "history" / "runs" / f"{run_id}.db"
        aside = shard.with_suffix(".aside")
        shutil.move(shard, aside)
        shard.mkdir()
        try:
            if batched:  # written behind: the failure is reported, not raised
                _log(instance, run_id, "lost")
                await log.barrier()
            else:  # stored by the thread that logs it, which gets the error
                with pytest.raises(EventLogWriteError):
                    _log(instance, run_id, "lost")
            assert log.store.failure is not None
            # An entry whose caller waits for it gets the error.
            with pytest.raises(EventLogWriteError, match="could not store 1 event-log entry"):
                _report_run_start(instance, run_id)
        finally:
            shard.rmdir()
            shutil.move(aside, shard)
        await asyncio.sleep(0)  # `on_failure` is called on the loop

    log, run_id, _ = _drive(instance, batched, scenario, on_failure=failures.append)
    assert failures == [log.store.failure]
    assert "could not store" in str(log.store.failure)
    # The storage is back when the run ends: the lost entries are stored then.
    assert _stored(instance, run_id) == ["stored", "lost", ET.RUN_START.value]
