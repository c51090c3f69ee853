"""The run process's writer of the run's event-log entries.

Dagster writes every entry as it is logged, each in its own transaction; on SQLite that
is an engine, a connection and an fsync per entry (~4-7 ms here), most of a step's
bookkeeping. While a run executes, `RunEventLog` takes over the writes of that run in
this process: one thread writes them in the order they were logged, and entries that
arrive together go into one transaction where the storage allows it (SQLite run shards,
see `_internals.run_shard_batch_writer`), ~0.25 ms an entry.

* Step events and logs (entries stored in the run's own shard only) are written
  behind: the caller does not wait. Nothing in a run's execution reads them back while
  the run executes (readiness, retries and dynamic mappings come from Dagster's
  `ActiveExecution`; inputs from IO managers); other readers see them milliseconds late.
* Every other entry (asset and asset-check events, run status) is written after all
  entries before it, and the caller waits for it, as it does without dagloop, so an
  asset event is readable before the step that logged it goes on.
* Entries sent by Dask workers (`STORE` messages) join the same queue, and any other
  worker message is handed back to the loop only once everything before it is written.

With storages that cannot batch (PostgreSQL, in-memory) only the Dask part is active.
"""

from __future__ import annotations

import asyncio
import queue
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    EventLogEntry,
    run_shard_batch_writer,
    writes_to_run_shard_only,
)
from dagloop.dagster.dask.messages import STORE
from dagloop.dagster.entry_routes import route_entries, unroute_entries

#: Most entries written in one transaction.
MAX_BATCH = 500

Message = list[Any]


@dataclass(eq=False)
class _Entry:
    entry: EventLogEntry
    #: Set once written, for a caller that waits.
    written: threading.Event | None = None
    error: BaseException | None = None


class RunEventLog:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._instance = instance
        self._run_id = run_id
        self._loop = loop
        self._write_batch = run_shard_batch_writer(instance)
        self._store: Callable[..., None] = instance.handle_new_event
        self._dispatch: Callable[[Message], None] = lambda message: None
        self._queue: queue.SimpleQueue[_Entry | Message | None] = queue.SimpleQueue()
        self._pending: list[EventLogEntry] = []
        self._thread = threading.Thread(target=self._main, name="dagloop-event-writer", daemon=True)
        self._intercepting = False
        #: Entries written, and write calls used for them (for tests and benchmarks).
        self.entries_written = 0
        self.writes = 0

    # -- lifecycle (on the run's loop) -------------------------------------------------

    def start(self, dispatch: Callable[[Message], None] | None = None) -> None:
        """Start the writer; `dispatch` receives workers' non-STORE messages, in order."""
        if dispatch is not None:
            self._dispatch = dispatch
        self._thread.start()
        if self._write_batch is not None:
            self._intercept()

    async def aclose(self) -> None:
        """Stop taking the run's writes, write everything received, stop the thread."""
        self._release()
        self._queue.put(None)
        await asyncio.to_thread(self._thread.join)

    # -- producers ---------------------------------------------------------------------

    def put_worker_message(self, message: Message) -> None:
        """A message from a Dask worker (any thread); decoded by the writer thread."""
        self._queue.put(message)

    def _handle_new_event(self, entry: EventLogEntry) -> None:
        """Replaces `instance.handle_new_event` for this run's entries (any thread)."""
        if threading.current_thread() is self._thread:
            self._store(entry)
            return
        if self._write_batch is not None and writes_to_run_shard_only(entry):
            self._queue.put(_Entry(entry))
            return
        item = _Entry(entry, written=threading.Event())
        self._queue.put(item)
        item.written.wait()  # type: ignore[union-attr]
        if item.error is not None:
            raise item.error

    def _intercept(self) -> None:
        self._store = route_entries(self._instance, self._run_id, self._handle_new_event)
        self._intercepting = True

    def _release(self) -> None:
        if self._intercepting:
            unroute_entries(self._instance, self._run_id)
            self._intercepting = False

    # -- the writer thread -------------------------------------------------------------

    def _main(self) -> None:
        """Take everything queued, write it (one transaction for the batchable entries),
        then hand the workers' other messages of that round back to the loop."""
        stopping = False
        while not stopping:
            items = [self._queue.get()]
            while len(items) < MAX_BATCH:
                try:
                    items.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            held: list[Message] = []
            for item in items:
                if item is None:
                    stopping = True
                elif isinstance(item, _Entry):
                    self._take(item)
                elif item[0] == STORE:
                    self._take(_Entry(dg.deserialize_value(item[1], EventLogEntry)))
                else:
                    held.append(item)
            self._flush()
            if held:
                self._loop.call_soon_threadsafe(self._dispatch_all, held)

    def _dispatch_all(self, messages: list[Message]) -> None:
        for message in messages:
            try:
                self._dispatch(message)
            except Exception as exc:  # one bad message must not drop the ones after it
                self._loop.call_exception_handler(
                    {"message": f"dagloop: handling a worker message failed: {exc!r}"}
                )

    def _take(self, item: _Entry) -> None:
        batchable = self._write_batch is not None and writes_to_run_shard_only(item.entry)
        if item.written is None and batchable:
            self._pending.append(item.entry)
            return
        self._flush()
        try:
            self._write(lambda: self._store(item.entry), 1)
        except BaseException as exc:
            item.error = exc
        finally:
            if item.written is not None:
                item.written.set()

    def _flush(self) -> None:
        if not self._pending:
            return
        entries, self._pending = self._pending, []
        write_batch = self._write_batch
        assert write_batch is not None
        try:
            self._write(lambda: write_batch(self._run_id, entries), len(entries))
        except Exception:
            # As Dagster does when a batch fails: fall back to one write per entry.
            for entry in entries:
                try:
                    self._write(lambda entry=entry: self._store(entry), 1)  # type: ignore[misc]
                except Exception as exc:
                    sys.stderr.write(f"dagloop: writing an event-log entry failed: {exc!r}\n")

    def _write(self, write: Callable[[], None], count: int) -> None:
        write()
        self.entries_written += count
        self.writes += 1
