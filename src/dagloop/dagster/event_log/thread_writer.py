"""Writes by a thread of their own: batched for storage on disk or a server, or one by
one (`event_log_writes: direct`)."""

from __future__ import annotations

import asyncio
import threading

from dagloop.dagster._internals import EventLogEntry
from dagloop.dagster.event_log.queued_writer import MAX_BATCH, QueuedWriter, _Entry, _Item
from dagloop.dagster.event_log.run_store import RunStore

#: How long the writer thread, once woken, lets a batch grow before it writes it (unless
#: a callback is urgent or the batch is full): one wake-up, and one GIL
#: hand-off, per batch instead of per entry. Part of what a SIGKILL can lose.
GATHER_SECONDS = 0.002


class ThreadBatchWriter(QueuedWriter):
    """A writer thread, woken by the first entry of a batch, lets the batch grow for
    `GATHER_SECONDS` (unless hurried), then writes it; a caller that waits for its entry
    writes the queue up to it itself."""

    def __init__(self, store: RunStore, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(store, loop)
        self._thread = threading.Thread(target=self._main, name="dagloop-event-writer", daemon=True)
        #: Something was queued on an empty queue / something must not wait to be written.
        self._wake = threading.Event()
        self._hurry = threading.Event()
        #: Serialises whoever writes the queue: the writer thread, or a caller that waits
        #: for its entry; re-entrant for a listener that logs while its entry is stored.
        self._write_lock = threading.RLock()
        #: The thread writing the queue (under `_write_lock`), if any.
        self._writing_thread: int | None = None

    def start(self) -> None:
        super().start()
        self._thread.start()

    async def close(self) -> None:
        self._close_queue(stop_mark=True)
        await asyncio.to_thread(self._thread.join)

    def in_writer_thread(self) -> bool:
        return (
            threading.current_thread() is self._thread
            or threading.get_ident() == self._writing_thread
        )

    def _entry_queued(self, size: int) -> None:
        if size == 1 or size >= MAX_BATCH:
            self._signal(urgent=size >= MAX_BATCH)

    def _wait_written(self, item: _Entry) -> None:
        """The caller would block until the writer thread got to `item`: it writes the
        queue up to `item` itself instead, which saves two thread hand-offs per entry
        (each a wake-up, late on a busy machine)."""
        assert item.written is not None
        with self._write_lock:
            if not item.written.is_set():
                self._write(self._take_through(item))

    async def _wait_all_written(self) -> None:
        if not self._thread.is_alive():
            return
        done = self._loop.create_future()

        def resolve() -> None:
            if not done.done():
                done.set_result(None)

        self.after_written(resolve, urgent=True)
        await done

    def _signal(self, *, urgent: bool) -> None:
        self._wake.set()
        if urgent:
            self._hurry.set()

    def _write(self, items: list[_Item]) -> bool:
        """`_process` by the thread that holds `_write_lock`; what a listener logs
        meanwhile in this thread is stored at once (`in_writer_thread`)."""
        self._writing_thread = threading.get_ident()
        try:
            return self._process(items)
        finally:
            self._writing_thread = None

    def _main(self) -> None:
        stopping = False
        while not stopping:
            self._wake.wait()
            self._wake.clear()
            if not self._hurry.is_set():
                self._hurry.wait(GATHER_SECONDS)
            self._hurry.clear()
            with self._write_lock:
                stopping = self._write(self._take_all())
        self._store.finish()


class DirectWriter(ThreadBatchWriter):
    """Dagster's own behaviour: every entry the run logs is stored by the thread that
    logs it, before that thread goes on. Entries from elsewhere (`enqueue_source`) and
    callbacks still go through the writer thread, which keeps their order."""

    def enqueue(self, entry: EventLogEntry, *, wait: bool) -> bool:
        return False
