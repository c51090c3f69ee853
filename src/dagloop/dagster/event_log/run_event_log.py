"""`RunEventLog`: takes over the writes of one run's entries in this process while dagloop
executes it, and hands them to the write strategy that suits the instance's storage."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Sequence
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    EncodedEntry,
    EventLogEntry,
    Storable,
    event_log_in_memory,
    writes_to_run_shard_only,
)
from dagloop.dagster.attempts import AttemptTable
from dagloop.dagster.entry_routes import QuarantinedThreads, route_entries, unroute_entries
from dagloop.dagster.errors import EventLogWriteError
from dagloop.dagster.event_log.loop_writer import LoopBatchWriter
from dagloop.dagster.event_log.run_store import Fence, RunStore
from dagloop.dagster.event_log.thread_writer import DirectWriter, ThreadBatchWriter
from dagloop.dagster.event_log.writer import EntryWriter
from dagloop.runtime.thread_interrupt import checkpoint


class RunEventLog:
    """The run's entries, in the order they were logged: step events and logs are written
    behind (the caller goes on); asset, asset-check and run events are written after
    every entry before them, and their caller waits, as it does without dagloop.

    The orchestrator awaits `barrier()` before a step starts, so the STEP_SUCCESS of every
    step it depends on is stored: a killed process loses no success a later step relied
    on. Entries a quarantined (abandoned) thread logs are dropped, even after the run's
    end; a second terminal event of a step attempt is dropped before it is stored.
    """

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        batched: bool = True,
        on_failure: Callable[[EventLogWriteError], None] | None = None,
        attempts: AttemptTable[Any] | None = None,
        fence: Fence | None = None,
    ) -> None:
        """`fence`: a Dask worker's lease, asked before each write commits (`RunStore`)."""
        self._instance = instance
        self._run_id = run_id
        self._store = RunStore(
            instance, run_id, loop, batched=batched, on_failure=on_failure, fence=fence
        )
        self._writer = _writer_for(instance, self._store, loop)
        self._routed = False
        #: Threads of abandoned steps: what they log from then on is dropped (`add`),
        #: until their step code returned (`release`).
        self.quarantined = QuarantinedThreads(self._unroute)
        #: The run's attempts: a second terminal event of one is not stored.
        self._attempts: AttemptTable[Any] = attempts if attempts is not None else AttemptTable()

    @property
    def store(self) -> RunStore:
        """Where the run's entries are stored: its counts (`entries_written`, `writes`)
        and its `failure`, the first entries that could not be stored."""
        return self._store

    # -- lifecycle (on the run's loop) -------------------------------------------------

    def start(self) -> None:
        """Take over the run's entries."""
        self._writer.start()
        self._store.store_unguarded = route_entries(
            self._instance, self._run_id, self._handle_new_event
        )
        self._routed = True

    async def aclose(self) -> None:
        """Write everything received, stop the writer. Entries logged afterwards are
        stored directly, except those of quarantined threads, which stay dropped until
        those threads are done."""
        self.quarantined.close()
        await self._writer.close()

    async def barrier(self) -> None:
        """Wait until every entry queued so far is stored (or given up on)."""
        await self._writer.barrier()

    # -- entries from elsewhere (any thread) -------------------------------------------

    def store_encoded(self, entries: Sequence[EncodedEntry]) -> None:
        """Entries of the run that another process encoded as their rows
        (`encode_entry`), stored after every entry handed in before them; decoded only if
        they are stored through the instance (asset, check and run events)."""

        def produce() -> list[Storable]:
            return [
                entry if writes_to_run_shard_only(entry) else entry.decode()
                for entry in entries
                if self._attempts.admit(entry)
            ]

        self._writer.enqueue_source(produce)

    def report_failure(self, failure: EventLogWriteError) -> None:
        """Another process could not store entries of this run: the run fails with it."""
        self._store.report_failure(failure)

    def after_written(self, callback: Callable[[], None]) -> None:
        """Call `callback` on the run's loop once every entry handed in before it is
        stored (or given up on); callbacks run in the order they were handed in."""
        self._writer.after_written(callback)

    def _unroute(self) -> None:
        if self._routed:
            self._routed = False
            unroute_entries(self._instance, self._run_id)

    # -- the run's own entries ---------------------------------------------------------

    def _handle_new_event(self, entry: EventLogEntry) -> None:
        """Replaces `instance.handle_new_event` for this run's entries (any thread)."""
        checkpoint()  # a log call of a step being interrupted: stop at its next own line
        if self._writer.in_writer_thread():
            self._store.store_unguarded(entry)
            return
        if threading.get_ident() in self.quarantined:
            return
        if not self._attempts.admit(entry.dagster_event):
            return
        if not self._writer.enqueue(entry, wait=not writes_to_run_shard_only(entry)):
            # Declined (direct writes, or the writer is closed): stored by the thread
            # that logs it, as Dagster does.
            self._store.store_one(entry, retry=True)


def _writer_for(
    instance: dg.DagsterInstance, store: RunStore, loop: asyncio.AbstractEventLoop
) -> EntryWriter:
    """Without a batch path a writer thread would gain nothing for the run's own entries;
    storage in this process's memory costs only CPU, so the loop writes it."""
    if not store.batched:
        return DirectWriter(store, loop)
    if event_log_in_memory(instance):
        return LoopBatchWriter(store, loop)
    return ThreadBatchWriter(store, loop)
