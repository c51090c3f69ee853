"""What a run reports when a Dask worker is lost (killed, out of memory, cut off) while
it ran some of the run's step attempts."""

from __future__ import annotations

import sys
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    PlanExecutionContext,
    serializable_error_info_from_exc_info,
)
from dagloop.errors import DagloopError


class WorkerLostError(DagloopError):
    """A step attempt's Dask worker was lost while the attempt ran: the attempt fails
    (or retries, as its RetryPolicy says); Dask does not run it again."""

    def __init__(self, worker: str, step_key: str, cause: str) -> None:
        because = f": {cause}" if cause else ""
        super().__init__(
            f"Dask worker {worker} was lost while it ran step '{step_key}'{because}. The "
            "attempt is not run again by Dask."
        )
        self.worker = worker
        self.step_key = step_key

    @classmethod
    def info(cls, worker: str, step_key: str, cause: Any) -> Any:
        """The error as Dagster reports it (a SerializableErrorInfo)."""
        try:
            raise cls(worker, step_key, _message(cause))
        except cls:
            return serializable_error_info_from_exc_info(sys.exc_info())


def lost_workers_event(
    context: PlanExecutionContext, worker: str, steps: list[str], cause: Any
) -> DagsterEvent:
    """The run's engine event for a lost worker: which steps it took along."""
    because = f" ({_message(cause)})" if cause is not None else ""
    return DagsterEvent.engine_event(
        context,
        f"dagloop async executor: Dask worker {worker} was lost{because}; "
        f"{len(steps)} step(s) that ran there fail or retry: {', '.join(steps)}",
        EngineEventData(
            metadata={
                "worker": dg.MetadataValue.text(worker),
                "lost_steps": dg.MetadataValue.json(steps),
            }
        ),
    )


def _message(cause: Any) -> str:
    """What a cause says: its text, or the message of an error (info)."""
    message = cause if isinstance(cause, str) else getattr(cause, "message", None)
    return str(message).strip() if message else ""
