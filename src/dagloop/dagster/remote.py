"""What the orchestrator asks of a place that runs steps outside the run's loop (the
Dask scale-out), and what it hands it for each attempt."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from dagloop.dagster._internals import DagsterEvent, ExecutionStep, KnownExecutionState
from dagloop.dagster.step_run import StepRun


class Where(enum.Enum):
    """Where an attempt runs, decided as it is about to start."""

    #: Elsewhere (the cluster).
    REMOTE = "remote"
    #: On the run's loop.
    LOOP = "loop"
    #: Not yet: offer it again once a place may have freed up.
    LATER = "later"


@dataclass(frozen=True, eq=False)
class RemoteAttempt:
    """One attempt of a step placed elsewhere."""

    run: StepRun
    #: The run's known state when the attempt was handed out.
    known_state: KnownExecutionState
    #: Passes each of its events on, to the caller and to `ActiveExecution`.
    accept: Callable[[DagsterEvent], None]
    #: Reports it failed with this error, when it cannot report its own end.
    fail: Callable[[BaseException], None]


class RemoteSteps(Protocol):
    """Runs chosen steps somewhere else and reports their events."""

    def place(self, step: ExecutionStep) -> Where:
        """Asked for each attempt as it is about to start. A step placed there may still
        run on the run's loop (lent while a local cluster starts), or wait to be placed
        (`LATER`: the orchestrator offers it again after `wake` was called, or after an
        attempt on its loop ended)."""
        ...

    def local_attempt_ended(self, step: ExecutionStep) -> None:
        """An attempt `place` left to the run's loop is over."""
        ...

    def wake_when_placeable(self, wake: Callable[[], None]) -> None:
        """Call `wake` once the steps `place` put off can be placed."""
        ...

    async def before_stopping(self) -> None:
        """The run is about to stop: after this, an attempt that has not begun
        (WAITING) never begins, so withdrawing it is final."""
        ...

    async def execute(self, attempt: RemoteAttempt) -> None:
        """Run the attempt's step to its end, passing each of its events to `accept`.
        The attempt is WAITING until its step code begins over there (`run.begin()`); a
        cancellation while it waits withdraws it. A cancellation with
        `run.cancel_reason` set stops the begun step; if it cannot report its own
        terminal event, call `fail(run.cancel_reason)`. A step budget is kept there."""
        ...
