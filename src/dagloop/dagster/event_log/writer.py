"""The one interface of the ways a run's entries are written (`RunEventLog` picks one)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from dagloop.dagster._internals import EventLogEntry, Storable

#: Produces entries on the writer's side (decoding them there, or dropping them).
EntrySource = Callable[[], Iterable[Storable]]


class EntryWriter(Protocol):
    """Writes a run's entries in the order they are handed in. Every method but `start`,
    `barrier` and `close` may be called from any thread."""

    def start(self) -> None:
        """Begin taking entries; called on the run's loop."""

    def enqueue(self, entry: EventLogEntry, *, wait: bool) -> bool:
        """Have `entry` stored after every entry handed in before it. With `wait`, return
        once it is stored (raising its EventLogWriteError if it could not be). False if
        the writer does not take it: the caller stores it itself."""

    def enqueue_source(self, source: EntrySource) -> None:
        """Like `enqueue` without waiting, for the entries `source` produces when their
        turn comes (so decoding stays off the caller's thread)."""

    def after_written(self, callback: Callable[[], None], *, urgent: bool = False) -> None:
        """Call `callback` on the run's loop once every entry handed in before it is
        stored (or given up on); callbacks run in the order they were handed in. An
        `urgent` one does not wait for a batch to grow."""

    async def barrier(self) -> None:
        """Return once every entry handed in so far is stored (or given up on)."""

    async def close(self) -> None:
        """Store everything handed in and stop; later entries are declined (`enqueue`
        returns False)."""

    def in_writer_thread(self) -> bool:
        """Whether the calling thread is the writer's own: what it logs while storing (a
        listener's entry) is stored at once, not queued behind what it is writing."""
