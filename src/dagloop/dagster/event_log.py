"""The run process's writer of the run's event-log entries.

Dagster writes every entry as it is logged, each in its own transaction; on SQLite that
is an engine, a connection and an fsync per entry (~4-7 ms here), most of a step's
bookkeeping. While a run executes, `RunEventLog` takes over the writes of that run in
this process: one thread writes them in the order they were logged, and entries that
arrive together go into one transaction where the storage allows it
(`_internals.run_shard_batch_writer`).

* Step events and logs are written behind: the caller does not wait. Nothing in a
  run's execution reads them back while a step runs (readiness, retries and dynamic
  mappings come from Dagster's `ActiveExecution`; inputs from IO managers). Before a
  step starts, the orchestrator awaits `barrier()`, so the STEP_SUCCESS of every step
  it depends on is stored: a process killed at any point loses no success that a
  later step relied on.
* Every other entry (asset and asset-check events, run status) is written after all
  entries before it, and the caller waits for it, as it does without dagloop.
* In-process listeners (`instance.add_event_listener`) are called for every entry once
  it is stored, batched or not.
* A write that fails is retried with backoff for a few seconds. An entry that still
  cannot be stored is never dropped silently: the caller that waits gets the error,
  and `on_failure` is told, so the run fails with the storage error.
* Entries logged by a thread the orchestrator abandoned (`quarantine`) are dropped,
  even after the run's end, so a step cut off by termination never writes into the
  run again.
* A second terminal event of a step attempt is dropped before it is stored
  (`terminal_events`, the run's `AttemptTable`).
* Entries sent by Dask workers (`STORE` messages) join the same queue, and any other
  worker message is handed back to the loop only once everything before it is written.

How entries reach the writer costs as much as writing them: a thread woken for every
entry takes the GIL from the event loop each time, and every system call the loop makes
then waits for the writer to let go (up to the 5 ms switch interval). So:

* on storage the process holds in memory (ephemeral instances), there is no writer
  thread: entries are written in batches on the thread that runs the event loop, once
  per loop iteration (or at once, by a thread that waits for its entry or finds a
  backlog), and a barrier is a flush;
* elsewhere the writer thread is woken once per batch, not per entry: the first entry
  queued wakes it, and it gathers for `GATHER_SECONDS` more (less when a caller waits,
  a barrier is queued or the batch is full) before it writes. A SIGKILL can lose what
  was queued in that time and not yet committed (a few ms).

`event_log_writes: direct` keeps Dagster's own behaviour (every entry stored in the
thread that logs it, before it goes on), with the same retries, failure reporting and
quarantine.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    EventLogEntry,
    event_listeners,
    event_log_in_memory,
    run_shard_batch_writer,
    writes_to_run_shard_only,
)
from dagloop.dagster.attempts import AttemptTable
from dagloop.dagster.dask.messages import STORE
from dagloop.dagster.entry_routes import route_entries, unroute_entries
from dagloop.runtime.thread_interrupt import checkpoint

#: Most entries written in one transaction.
MAX_BATCH = 500
#: How long the writer thread, once woken, lets a batch grow before it writes it (unless
#: a caller waits, a barrier is queued or the batch is full): one wake-up (and one GIL
#: hand-off) per batch instead of per entry. Part of what a SIGKILL can lose.
GATHER_SECONDS = 0.002
#: In-memory storage: a thread other than the loop's that finds this many entries queued
#: writes the queue itself (as Dagster stores every entry in the thread that logs it), so
#: threads that log faster than the loop writes cannot bury it under a backlog.
SELF_WRITE_BACKLOG = 64
#: How long a failed write is retried (waits of 0.05, 0.2, 0.8, 2 s, then up to the
#: deadline): storage back within that loses nothing. A storage that retries on its own
#: (dagster-postgres reconnects for ~6 s) gets one attempt of its own length.
RETRY_SECONDS = 3.8

Message = list[Any]


class EventLogWriteError(dg.DagsterError):
    """Entries of a run could not be stored in its event log."""


@dataclass(eq=False)
class _Entry:
    entry: EventLogEntry
    #: Set once written, for a caller that waits.
    written: threading.Event | None = None
    error: BaseException | None = None


@dataclass(eq=False)
class _Barrier:
    done: Callable[[], object]


class RunEventLog:
    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        batched: bool = True,
        on_failure: Callable[[EventLogWriteError], None] | None = None,
    ) -> None:
        self._instance = instance
        self._run_id = run_id
        self._loop = loop
        self._write_batch = run_shard_batch_writer(instance) if batched else None
        self._store: Callable[..., None] = instance.handle_new_event
        self._dispatch: Callable[[Message], None] = lambda message: None
        self._on_failure = on_failure
        #: In-memory storage: written on the loop's thread (or by a waiting caller).
        self._on_loop = self._write_batch is not None and event_log_in_memory(instance)
        #: Queued, not yet taken by the writer (guarded by `_lock`).
        self._items: list[_Entry | _Barrier | Message | None] = []
        #: Something was queued on an empty queue / something must not wait to be written.
        self._wake = threading.Event()
        self._hurry = threading.Event()
        #: Serialises the writers of the loop mode (the loop, waiting callers); re-entrant
        #: for a listener that logs.
        self._write_lock = threading.RLock()
        self._flush_scheduled = False
        self._loop_thread: int | None = None
        self._pending: list[EventLogEntry] = []
        #: Entries given up on, tried once more when the run ends.
        self._lost: list[EventLogEntry] = []
        self._thread = threading.Thread(target=self._main, name="dagloop-event-writer", daemon=True)
        self._routed = False
        self._closed = False
        #: Guards the quarantine and the queue's counters against the logging threads.
        self._lock = threading.Lock()
        self._quarantined: set[int] = set()
        self._queued_behind = 0
        self._barrier_mark = 0
        #: Drops a second terminal event of a step attempt (any thread, before storing).
        #: The run's attempts: a second terminal event of one is not stored.
        self.terminal_events: AttemptTable[Any] = AttemptTable()
        #: The first entries that could not be stored, as the run's failure.
        self.failure: EventLogWriteError | None = None
        #: Entries written, and write calls used for them (for the run's summary event).
        self.entries_written = 0
        self.writes = 0

    # -- lifecycle (on the run's loop) -------------------------------------------------

    def start(self, dispatch: Callable[[Message], None] | None = None) -> None:
        """Start the writer; `dispatch` receives workers' non-STORE messages, in order."""
        if dispatch is not None:
            self._dispatch = dispatch
        self._loop_thread = threading.get_ident()
        if not self._on_loop:
            self._thread.start()
        self._store = route_entries(self._instance, self._run_id, self._handle_new_event)
        self._routed = True

    async def aclose(self) -> None:
        """Write everything received, stop the thread. Entries logged afterwards are
        stored directly, except those of quarantined threads, which stay dropped until
        those threads are done."""
        with self._lock:
            self._closed = True
            release = not self._quarantined
        if release:
            self._unroute()
        if self._on_loop:
            self._drain()
            self._write_lost()
            return
        self._enqueue(None, urgent=True)
        await asyncio.to_thread(self._thread.join)

    async def barrier(self) -> None:
        """Wait until every entry queued so far is stored (or given up on)."""
        with self._lock:
            mark = self._queued_behind
        if mark == self._barrier_mark:
            return
        if self._on_loop:
            self._drain()
            self._barrier_mark = max(self._barrier_mark, mark)
            return
        if not self._thread.is_alive():
            return
        done = self._loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        self._enqueue(_Barrier(lambda: self._loop.call_soon_threadsafe(resolve)), urgent=True)
        await done
        self._barrier_mark = max(self._barrier_mark, mark)

    # -- abandoned threads -------------------------------------------------------------

    def quarantine(self, thread_id: int) -> None:
        """Drop every entry the thread logs from now on (its step was abandoned)."""
        with self._lock:
            self._quarantined.add(thread_id)

    def release_thread(self, thread_id: int) -> None:
        """The thread's step code has returned: what it logs next belongs to other work."""
        with self._lock:
            if thread_id not in self._quarantined:
                return
            self._quarantined.discard(thread_id)
            release = self._closed and not self._quarantined
        if release:
            self._unroute()

    def _unroute(self) -> None:
        if self._routed:
            self._routed = False
            unroute_entries(self._instance, self._run_id)

    # -- producers ---------------------------------------------------------------------

    def put_worker_message(self, message: Message) -> None:
        """A message from a Dask worker (any thread); decoded by the writer thread."""
        with self._lock:
            self._queued_behind += 1
        self._enqueue(message, urgent=False)

    def _handle_new_event(self, entry: EventLogEntry) -> None:
        """Replaces `instance.handle_new_event` for this run's entries (any thread)."""
        checkpoint()  # a log call of a step being interrupted: stop at its next own line
        if threading.current_thread() is self._thread:
            self._store(entry)
            return
        item: _Entry | None = None
        first = full = backlog = False
        with self._lock:
            if threading.get_ident() in self._quarantined:
                return
        if not self.terminal_events.admit(entry.dagster_event):
            return
        with self._lock:
            # Without a batch path (or once closed) an entry is stored by the thread
            # that logs it, as Dagster does: the writer thread would gain nothing.
            queued = not self._closed and self._write_batch is not None
            if queued and writes_to_run_shard_only(entry):
                self._queued_behind += 1
                first, full = self._append(_Entry(entry))
                backlog = len(self._items) >= SELF_WRITE_BACKLOG
            elif queued:
                item = _Entry(entry, written=threading.Event())
                self._append(item)
        if not queued:
            self._write_now(entry)
            return
        if item is None:  # written behind
            if self._on_loop and backlog and threading.get_ident() != self._loop_thread:
                self._drain()
            elif first or full:
                self._signal(urgent=full)
            return
        if self._on_loop:
            self._drain()  # a caller that waits writes the queue itself
        else:
            self._signal(urgent=True)
            item.written.wait()  # type: ignore[union-attr]
        if item.error is not None:
            raise item.error

    def _append(self, item: _Entry | _Barrier | Message | None) -> tuple[bool, bool]:
        """Queue `item` (with `_lock` held): was the queue empty, is a batch full?"""
        self._items.append(item)
        size = len(self._items)
        return size == 1, size >= MAX_BATCH

    def _enqueue(self, item: _Entry | _Barrier | Message | None, *, urgent: bool) -> None:
        with self._lock:
            first, full = self._append(item)
        if first or urgent or full:
            self._signal(urgent=urgent or full)

    def _signal(self, *, urgent: bool) -> None:
        """Have the queue written: soon (the loop's next iteration, the writer's gathered
        batch) or, when `urgent`, now."""
        if self._on_loop:
            if not self._flush_scheduled:
                self._flush_scheduled = True
                if threading.get_ident() == self._loop_thread:
                    self._loop.call_soon(self._drain)
                else:
                    with contextlib.suppress(RuntimeError):  # a closed loop: aclose drained
                        self._loop.call_soon_threadsafe(self._drain)
            return
        self._wake.set()
        if urgent:
            self._hurry.set()

    def _write_now(self, entry: EventLogEntry) -> None:
        try:
            self._write(lambda: self._store(entry), 1)
        except Exception as exc:
            raise self._fail(exc, [entry]) from exc

    # -- the writer thread -------------------------------------------------------------

    def _main(self) -> None:
        """The writer thread: woken by the first entry of a batch, it lets the batch grow
        for `GATHER_SECONDS` (unless hurried), then writes it."""
        stopping = False
        while not stopping:
            self._wake.wait()
            self._wake.clear()
            if not self._hurry.is_set():
                self._hurry.wait(GATHER_SECONDS)
            self._hurry.clear()
            with self._lock:
                items, self._items = self._items, []
            stopping = self._process(items)
        self._write_lost()

    def _drain(self) -> None:
        """Loop mode: write everything queued, in this thread (the loop's, or a caller's
        that waits for its entry)."""
        with self._write_lock:
            with self._lock:
                self._flush_scheduled = False
                items, self._items = self._items, []
            if items:
                self._process(items)

    def _process(self, items: list[_Entry | _Barrier | Message | None]) -> bool:
        """Write `items` (one transaction for the batchable entries), then hand the
        workers' other messages back to the loop; True if the stop mark was among them."""
        stopping = False
        held: list[Message] = []
        barriers: list[_Barrier] = []
        for item in items:
            if item is None:
                stopping = True
            elif isinstance(item, _Entry):
                self._take(item)
            elif isinstance(item, _Barrier):
                barriers.append(item)
            elif item[0] == STORE:
                entry = dg.deserialize_value(item[1], EventLogEntry)
                if self.terminal_events.admit(entry.dagster_event):
                    self._take(_Entry(entry))
            else:
                held.append(item)
        self._flush()
        for barrier in barriers:
            barrier.done()
        if held:
            if threading.get_ident() == self._loop_thread:
                self._dispatch_all(held)
            else:
                self._loop.call_soon_threadsafe(self._dispatch_all, held)
        return stopping

    def _write_lost(self) -> None:
        """At the run's end, one more bounded try at the entries that could not be
        stored: after a short outage the run still fails, but its log is complete."""
        lost, self._lost = self._lost, []
        if not lost:
            return
        try:
            if self._write_batch is not None:
                write_batch = self._write_batch
                self._write(lambda: write_batch(self._run_id, lost), len(lost), retry=True)
                self._notify_listeners(lost)
            else:
                for entry in lost:
                    self._write(lambda entry=entry: self._store(entry), 1, retry=True)  # type: ignore[misc]
        except Exception as exc:
            sys.stderr.write(f"dagloop: {len(lost)} event-log entries stay lost: {exc!r}\n")

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
            if len(self._pending) >= MAX_BATCH:
                self._flush()
            return
        self._flush()
        try:
            self._write(lambda: self._store(item.entry), 1, retry=self.failure is None)
        except Exception as exc:
            item.error = self._fail(exc, [item.entry])
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
            self._write(
                lambda: write_batch(self._run_id, entries), len(entries), retry=self.failure is None
            )
        except Exception:
            # As Dagster does when a batch fails: one write per entry, so that one entry
            # the storage rejects does not take the others with it. Once one of those
            # fails too, the storage is down: the rest are not tried one by one.
            for index, entry in enumerate(entries):
                try:
                    self._write(lambda entry=entry: self._store(entry), 1, retry=False)  # type: ignore[misc]
                except Exception as exc:
                    self._fail(exc, entries[index:])
                    return
            return
        self._notify_listeners(entries)

    def _notify_listeners(self, entries: Sequence[EventLogEntry]) -> None:
        listeners = event_listeners(self._instance, self._run_id)
        for entry in entries:
            for listener in listeners:
                listener(entry)

    def _write(self, write: Callable[[], None], count: int, *, retry: bool = True) -> None:
        deadline = time.monotonic() + (RETRY_SECONDS if retry else 0.0)
        delay = 0.05
        while True:
            try:
                write()
                break
            except Exception:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                # The last wait is cut to the deadline, so the window is used to its end.
                time.sleep(min(delay, remaining))
                delay = min(delay * 4, 2.0)
        self.entries_written += count
        self.writes += 1

    def _fail(self, error: Exception, lost: Sequence[EventLogEntry]) -> EventLogWriteError:
        steps = sorted({entry.step_key for entry in lost if entry.step_key})
        named = f" (steps: {', '.join(steps[:10])}{', ...' if len(steps) > 10 else ''})"
        failure = EventLogWriteError(
            f"dagloop could not store {len(lost)} event-log entr"
            f"{'y' if len(lost) == 1 else 'ies'} of run {self._run_id}"
            f"{named if steps else ''}: {error!r}. "
            "The run is failed so that it is not reported successful with entries "
            "missing; re-execute it from failure once the storage is back."
        )
        sys.stderr.write(f"dagloop: {failure}\n")
        self._lost.extend(lost)
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = failure
        if first and self._on_failure is not None:
            on_failure = self._on_failure
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
                self._loop.call_soon_threadsafe(on_failure, failure)
        return failure
