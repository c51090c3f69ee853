"""Batched writes on the event loop's thread, for storage held in this process's memory.

A writer thread would cost a GIL hand-off per batch for storage that costs only CPU to
write (docs/performance.md); the loop writes the queue once per iteration instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading

from dagloop.dagster.event_log.queued_writer import MAX_BATCH, QueuedWriter, _Entry
from dagloop.dagster.event_log.run_store import RunStore

#: A thread other than the loop's that finds this many entries queued writes the queue
#: itself (as Dagster stores every entry in the thread that logs it), so threads that log
#: faster than the loop writes cannot bury it under a backlog.
SELF_WRITE_BACKLOG = 64


class LoopBatchWriter(QueuedWriter):
    """Writes the queue on the loop's thread once per loop iteration; a thread that waits
    for its entry or finds a backlog writes the queue itself; a barrier is a flush."""

    def __init__(self, store: RunStore, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(store, loop)
        #: Serialises the writers (the loop, waiting callers); re-entrant for a listener
        #: that logs.
        self._write_lock = threading.RLock()
        self._drain_scheduled = False

    async def close(self) -> None:
        self._close_queue(stop_mark=False)
        self._drain()
        self._store.finish()

    def _entry_queued(self, size: int) -> None:
        if size >= SELF_WRITE_BACKLOG and threading.get_ident() != self._loop_thread:
            self._drain()
        elif size == 1 or size >= MAX_BATCH:
            self._signal(urgent=size >= MAX_BATCH)

    def _wait_written(self, item: _Entry) -> None:
        self._drain()  # a caller that waits writes the queue itself

    async def _wait_all_written(self) -> None:
        self._drain()

    def _signal(self, *, urgent: bool) -> None:
        """The loop's next iteration writes the queue (soon enough even when `urgent`:
        whoever cannot wait for it drains the queue itself)."""
        if self._drain_scheduled:
            return
        self._drain_scheduled = True
        if threading.get_ident() == self._loop_thread:
            self._loop.call_soon(self._drain)
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: close() drained
                self._loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        """Write everything queued, in this thread (the loop's, or a caller's that waits
        for its entry)."""
        with self._write_lock:
            with self._lock:
                self._drain_scheduled = False
                items, self._items = self._items, []
            if items:
                self._process(items)
