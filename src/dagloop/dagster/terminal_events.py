"""Exactly one terminal event per step attempt, enforced where a run's events leave us.

Precise interrupt delivery (runtime/thread_interrupt.py) keeps Dagster's step code from
ever reporting a step twice; this is the second line of defence. Every event of a run
passes a `TerminalLedger` before it is stored: an attempt opens with STEP_START (or
STEP_RESTARTED for a retry) and ends with STEP_SUCCESS, STEP_FAILURE or
STEP_UP_FOR_RETRY. A second terminal event for an attempt that already ended is not
stored: it is dropped, counted, and its owner is told (the orchestrator reports it as a
warning engine event).
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from dagloop.dagster._internals import DagsterEvent, DagsterEventType

TERMINAL_EVENT_TYPES = frozenset(
    {
        DagsterEventType.STEP_SUCCESS.value,
        DagsterEventType.STEP_FAILURE.value,
        DagsterEventType.STEP_UP_FOR_RETRY.value,
    }
)
_OPENING_EVENT_TYPES = frozenset(
    {DagsterEventType.STEP_START.value, DagsterEventType.STEP_RESTARTED.value}
)

#: Told (step key, event type value) of each dropped event; called in the logging thread.
DropReport = Callable[[str, str], None]


def is_terminal(event: DagsterEvent) -> bool:
    return event.event_type_value in TERMINAL_EVENT_TYPES


class TerminalLedger:
    """Which step attempts of one run have ended; safe to call from any thread."""

    def __init__(self, on_drop: DropReport | None = None) -> None:
        self._lock = threading.Lock()
        self._ended: set[str] = set()
        self._on_drop = on_drop
        #: Terminal events dropped because their attempt had ended already.
        self.dropped = 0

    def set_drop_report(self, on_drop: DropReport) -> None:
        self._on_drop = on_drop

    def has_ended(self, step_key: str) -> bool:
        with self._lock:
            return step_key in self._ended

    def admit(self, event: DagsterEvent | None) -> bool:
        """False for a second terminal event of an attempt: it must not be stored."""
        if event is None or event.step_key is None:
            return True
        kind = event.event_type_value
        if kind in _OPENING_EVENT_TYPES:
            with self._lock:
                self._ended.discard(event.step_key)
            return True
        if kind not in TERMINAL_EVENT_TYPES:
            return True
        with self._lock:
            duplicate = event.step_key in self._ended
            if duplicate:
                self.dropped += 1
            else:
                self._ended.add(event.step_key)
        if duplicate and self._on_drop is not None:
            self._on_drop(event.step_key, kind)
        return not duplicate
