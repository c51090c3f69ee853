"""The thread that flushes the open step captures now and then.

A step's lines are not flushed one by one (a flush per line is a write system call per
line); so that a reader (the UI) can follow a running step's output, what was written
since the last flush is flushed periodically instead.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterable
from typing import Protocol


class Flushable(Protocol):
    def flush_if_dirty(self) -> None: ...


class Flusher:
    """Calls `flush_if_dirty()` on each of `targets()` every `interval` seconds, on a
    daemon thread started by the first `start()`, until `stop()`."""

    def __init__(
        self, targets: Callable[[], Iterable[Flushable]], interval: float, *, name: str
    ) -> None:
        self._targets = targets
        self._interval = interval
        self._name = name
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        if self._thread is not None:
            return
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            for target in self._targets():
                with contextlib.suppress(Exception):
                    target.flush_if_dirty()

    def stop(self) -> None:
        """Ask the thread to end after its current round (`join` waits for it)."""
        self._stop.set()

    def join(self, timeout: float) -> None:
        if self._thread is not None:
            self._thread.join(timeout=timeout)


__all__ = ["Flushable", "Flusher"]
