"""What the batching writers share: a queue of entries and callbacks, written in order,
the run-shard-only entries of a batch in one transaction."""

from __future__ import annotations

import asyncio
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

from dagloop.dagster._internals import EventLogEntry, Storable, writes_to_run_shard_only
from dagloop.dagster.errors import EventLogWriteError
from dagloop.dagster.event_log.run_store import RunStore
from dagloop.dagster.event_log.writer import EntrySource

#: Most entries written in one transaction.
MAX_BATCH = 500


@dataclass(eq=False)
class _Entry:
    entry: Storable
    #: Set once written, for a caller that waits.
    written: threading.Event | None = None
    error: EventLogWriteError | None = None


@dataclass(eq=False)
class _Source:
    produce: EntrySource


@dataclass(eq=False)
class _AfterWritten:
    callback: Callable[[], None]


#: The stop mark: the writer stops once it has written what came before.
_STOP = None

_Item = _Entry | _Source | _AfterWritten | None


class QueuedWriter(ABC):
    """Entries and callbacks queue up; `_process` writes a taken batch in order. Subclasses
    decide who takes the queue and when (`_signal`, `_entry_queued`, `_wait_written`)."""

    def __init__(self, store: RunStore, loop: asyncio.AbstractEventLoop) -> None:
        self._store = store
        self._loop = loop
        self._loop_thread: int | None = None
        #: Guards the queue, its closing and the count of entries written behind.
        self._lock = threading.Lock()
        self._items: list[_Item] = []
        self._closed = False
        self._queued_behind = 0
        #: `_queued_behind` at the last barrier: a barrier with nothing new returns at once.
        self._barrier_mark = 0
        #: Taken entries waiting for one transaction (used by whoever runs `_process`).
        self._pending: list[Storable] = []

    def start(self) -> None:
        self._loop_thread = threading.get_ident()

    def enqueue(self, entry: EventLogEntry, *, wait: bool) -> bool:
        item = _Entry(entry, written=threading.Event() if wait else None)
        with self._lock:
            if self._closed:
                return False
            if not wait:
                self._queued_behind += 1
            self._items.append(item)
            size = len(self._items)
        if not wait:
            self._entry_queued(size)
            return True
        self._wait_written(item)
        if item.error is not None:
            raise item.error
        return True

    def enqueue_source(self, source: EntrySource) -> None:
        with self._lock:
            self._queued_behind += 1
        self._enqueue(_Source(source), urgent=False)

    def after_written(self, callback: Callable[[], None], *, urgent: bool = False) -> None:
        self._enqueue(_AfterWritten(callback), urgent=urgent)

    async def barrier(self) -> None:
        with self._lock:
            mark = self._queued_behind
        if mark == self._barrier_mark:
            return
        await self._wait_all_written()
        self._barrier_mark = max(self._barrier_mark, mark)

    def in_writer_thread(self) -> bool:
        return False

    def _enqueue(self, item: _Item, *, urgent: bool) -> None:
        with self._lock:
            self._items.append(item)
            size = len(self._items)
        full = size >= MAX_BATCH
        if size == 1 or urgent or full:
            self._signal(urgent=urgent or full)

    def _close_queue(self, *, stop_mark: bool) -> None:
        """Decline entries from now on; queue the stop mark if the writer needs one."""
        with self._lock:
            self._closed = True
            if stop_mark:
                self._items.append(_STOP)
        if stop_mark:
            self._signal(urgent=True)

    def _take_through(self, item: _Entry) -> list[_Item]:
        """The queue's items up to `item` (which must be queued); the rest stay."""
        with self._lock:
            index = next(i for i, queued in enumerate(self._items) if queued is item)
            taken, self._items = self._items[: index + 1], self._items[index + 1 :]
        return taken

    def _take_all(self) -> list[_Item]:
        with self._lock:
            items, self._items = self._items, []
        return items

    # -- hooks -------------------------------------------------------------------------

    @abstractmethod
    def _signal(self, *, urgent: bool) -> None:
        """Have the queue written: soon, or when `urgent`, now."""

    @abstractmethod
    def _entry_queued(self, size: int) -> None:
        """An entry written behind joined the queue, which now holds `size` items."""

    @abstractmethod
    def _wait_written(self, item: _Entry) -> None:
        """Return once `item`, queued by the calling thread, is written or given up on."""

    @abstractmethod
    async def _wait_all_written(self) -> None:
        """Return once everything queued so far is written or given up on."""

    # -- writing a batch ---------------------------------------------------------------

    def _process(self, items: list[_Item]) -> bool:
        """Write `items` (one transaction for the batchable entries), then hand the
        callbacks to the loop; True if the stop mark was among them."""
        stopping = False
        callbacks: list[Callable[[], None]] = []
        for item in items:
            if item is _STOP:
                stopping = True
            elif isinstance(item, _Entry):
                self._take(item)
            elif isinstance(item, _Source):
                for entry in item.produce():
                    self._take(_Entry(entry))
            else:
                callbacks.append(item.callback)
        self._flush()
        if callbacks:
            if threading.get_ident() == self._loop_thread:
                self._run_callbacks(callbacks)
            else:
                self._loop.call_soon_threadsafe(self._run_callbacks, callbacks)
        return stopping

    def _run_callbacks(self, callbacks: list[Callable[[], None]]) -> None:
        for callback in callbacks:
            try:
                callback()
            except Exception as exc:  # one failing callback must not skip the ones after it
                self._loop.call_exception_handler(
                    {"message": f"dagloop: a callback after event-log writes failed: {exc!r}"}
                )

    def _take(self, item: _Entry) -> None:
        if item.written is None and self._store.batched and writes_to_run_shard_only(item.entry):
            self._pending.append(item.entry)
            if len(self._pending) >= MAX_BATCH:
                self._flush()
            return
        self._flush()
        try:
            self._store.store_one(item.entry, retry=self._store.failure is None)
        except EventLogWriteError as error:
            item.error = error
        finally:
            if item.written is not None:
                item.written.set()

    def _flush(self) -> None:
        if self._pending:
            entries, self._pending = self._pending, []
            self._store.store_batch(entries)
