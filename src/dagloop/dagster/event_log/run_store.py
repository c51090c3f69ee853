"""Store a run's event-log entries: retries with backoff, failure reporting, listeners.

Every write strategy stores through one `RunStore`, so they all retry, count and fail
the same way, and an entry that cannot be stored is never dropped silently. The only
entries dropped on purpose are a Dask worker's once the run process took that worker as
lost (`fence`): the run process reports its steps from then on.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import threading
import time
from collections.abc import Callable, Sequence

import dagster as dg

from dagloop.dagster._internals import (
    EventLogEntry,
    Storable,
    decoded,
    event_listeners,
    fenced_write_hold,
    run_shard_batch_writer,
)
from dagloop.dagster.errors import EventLogWriteError

#: How long a failed write is retried (waits of 0.05, 0.2, 0.8, 2 s, then up to the
#: deadline): storage back within that loses nothing. A storage that retries on its own
#: (dagster-postgres reconnects for several seconds) gets one attempt of its own length.
RETRY_SECONDS = 3.8

#: Stores one entry: the instance's own `handle_new_event` (notifies the listeners too).
StoreOne = Callable[[EventLogEntry], None]
#: Returns once writes may land: True, or False if they must not any more.
Fence = Callable[[], bool]


class _Withdrawn(Exception):
    """The fence said no: the batch was rolled back, and is not retried."""


class RunStore:
    """Writes one run's entries to the instance's storage, one by one or in batches."""

    def __init__(
        self,
        instance: dg.DagsterInstance,
        run_id: str,
        loop: asyncio.AbstractEventLoop,
        *,
        batched: bool,
        on_failure: Callable[[EventLogWriteError], None] | None,
        fence: Fence | None = None,
    ) -> None:
        """`fence`: asked right before each write commits (a Dask worker's lease)."""
        self._instance = instance
        self._fence = fence
        self._run_id = run_id
        self._loop = loop
        self._on_failure = on_failure
        self._write_batch = run_shard_batch_writer(instance) if batched else None
        #: Held around each fenced write through the instance: the run process waits
        #: for it before it reads what a lost worker stored (`fenced_writes.py`).
        self._hold = fenced_write_hold(instance, run_id) if fence is not None else None
        #: Replaced by the instance's own method once the run's entries are routed away.
        self.store_unguarded: StoreOne = instance.handle_new_event
        self._lock = threading.Lock()
        #: Entries given up on, tried once more when the run ends.
        self._lost: list[Storable] = []
        #: The first entries that could not be stored, as the run's failure.
        self.failure: EventLogWriteError | None = None
        #: Entries written, and write calls used for them (for the run's summary event).
        self.entries_written = 0
        self.writes = 0
        #: Entries the fence withdrew.
        self.withdrawn = 0

    @property
    def batched(self) -> bool:
        """Whether entries `writes_to_run_shard_only` accepts can be written many at once."""
        return self._write_batch is not None

    def store_one(self, entry: Storable, *, retry: bool) -> None:
        """Store `entry` (retried with backoff if `retry`), or raise EventLogWriteError."""
        entry = decoded(entry)
        try:
            self._store_through_instance(entry, retry=retry)
        except Exception as exc:
            raise self._fail(exc, [entry]) from exc

    def _store_through_instance(self, entry: EventLogEntry, *, retry: bool) -> None:
        """Dagster's own write, which has no hook before its commit: the fence is asked
        before it, inside the hold, which the run process waits for before it reads what
        a lost worker stored."""
        with contextlib.nullcontext() if self._hold is None else self._hold.held():
            if self._fence is not None and not self._fence():
                self.withdrawn += 1
                return
            self._write(lambda: self.store_unguarded(entry), 1, retry=retry)

    def report_failure(self, failure: EventLogWriteError) -> None:
        """Entries another process could not store: the run fails as if they were ours."""
        self._report(failure)

    def store_batch(self, entries: list[Storable]) -> None:
        """Store run-shard-only `entries` in one transaction, then notify the listeners.
        Failures are reported (`failure`, `on_failure`), not raised."""
        write_batch = self._write_batch
        assert write_batch is not None
        try:
            self._write(
                lambda: write_batch(self._run_id, entries, self._before_commit),
                len(entries),
                retry=self.failure is None,
            )
        except _Withdrawn:
            self.withdrawn += len(entries)
            return
        except Exception:
            # As Dagster does when a batch fails: one write per entry, so that one entry
            # the storage rejects does not take the others with it. Once one of those
            # fails too, the storage is down: the rest are not tried one by one.
            for index, entry in enumerate(map(decoded, entries)):
                try:
                    self._store_through_instance(entry, retry=False)
                except Exception as exc:
                    self._fail(exc, entries[index:])
                    return
            return
        self._notify_listeners(entries)

    def finish(self) -> None:
        """At the run's end (its writer's last write done): one more bounded try at the
        entries that could not be stored (after a short outage the run still fails, but
        its log is complete); then the batch writer's connections are closed."""
        try:
            self._store_lost()
        finally:
            if self._write_batch is not None:
                self._write_batch.close()
            if self._hold is not None:
                self._hold.close()

    def _store_lost(self) -> None:
        lost, self._lost = self._lost, []
        if not lost:
            return
        try:
            if self._write_batch is not None:
                write_batch = self._write_batch
                self._write(
                    lambda: write_batch(self._run_id, lost, self._before_commit),
                    len(lost),
                    retry=True,
                )
                self._notify_listeners(lost)
            else:
                for entry in map(decoded, lost):
                    self._store_through_instance(entry, retry=True)
        except _Withdrawn:
            self.withdrawn += len(lost)
        except Exception as exc:
            sys.stderr.write(f"dagloop: {len(lost)} event-log entries stay lost: {exc!r}\n")

    def _notify_listeners(self, entries: Sequence[Storable]) -> None:
        """A batch bypasses `handle_new_event`, which calls the in-process listeners."""
        listeners = event_listeners(self._instance, self._run_id)
        if not listeners:
            return
        for entry in map(decoded, entries):
            for listener in listeners:
                listener(entry)

    def _before_commit(self) -> None:
        if self._fence is not None and not self._fence():
            raise _Withdrawn

    def _write(self, write: Callable[[], None], count: int, *, retry: bool = True) -> None:
        deadline = time.monotonic() + (RETRY_SECONDS if retry else 0.0)
        delay = 0.05
        while True:
            try:
                write()
                break
            except _Withdrawn:
                raise
            except Exception:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                # The last wait is cut to the deadline, so the window is used to its end.
                time.sleep(min(delay, remaining))
                delay = min(delay * 4, 2.0)
        self.entries_written += count
        self.writes += 1

    def _fail(self, error: Exception, lost: Sequence[Storable]) -> EventLogWriteError:
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
        with self._lock:
            self._lost.extend(lost)
        self._report(failure)
        return failure

    def _report(self, failure: EventLogWriteError) -> None:
        with self._lock:
            first = self.failure is None
            if first:
                self.failure = failure
        if first and self._on_failure is not None:
            on_failure = self._on_failure
            with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
                self._loop.call_soon_threadsafe(on_failure, failure)
