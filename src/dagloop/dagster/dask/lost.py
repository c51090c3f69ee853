"""What a run reports when a Dask worker is lost (killed, out of memory, cut off) while
it ran some of the run's step attempts, and what such a worker stored of them."""

from __future__ import annotations

import asyncio
import sys
from collections import Counter
from collections.abc import Set
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    PlanExecutionContext,
    serializable_error_info_from_exc_info,
    wait_for_fenced_writes,
)
from dagloop.dagster.attempts import OPENING_EVENT_TYPES, TERMINAL_EVENT_TYPES
from dagloop.errors import DagloopError

#: What a lost worker may have stored of an attempt: its opening and its end.
STORED_STEP_EVENTS = {
    dg.DagsterEventType(value) for value in OPENING_EVENT_TYPES | TERMINAL_EVENT_TYPES
}


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


async def wait_for_its_last_write(context: PlanExecutionContext, worker: str) -> None:
    """Before reading what a lost worker stored. Stopped inside a write, past its
    lease's last check, it finishes that write when it resumes: wait until no fenced
    write of the run is under way (SQLite, PostgreSQL). A write it begins later is
    refused by its lease (its channel is closed: no PONG renews it)."""
    try:
        await asyncio.to_thread(wait_for_fenced_writes, context.instance, context.run_id)
    except Exception as error:  # its steps are reported all the same
        context.log.warning(
            f"dagloop: waiting for the run's event-log writes failed while Dask worker "
            f"{worker} was reported lost ({error!r}); an entry it was committing may be "
            "stored after its steps are reported"
        )


def stored_openings_and_ends(
    context: PlanExecutionContext, step_keys: Set[str]
) -> tuple[Counter[str], dict[str, DagsterEvent]]:
    """Of each of `step_keys`, as stored in the run's event log: how many attempts
    opened (STEP_START or its like), and the terminal event stored after the last of
    them, if any."""
    openings: Counter[str] = Counter()
    ends: dict[str, DagsterEvent] = {}
    for entry in context.instance.all_logs(context.run_id, of_type=STORED_STEP_EVENTS):
        event, key = entry.dagster_event, entry.step_key
        if event is None or key is None or key not in step_keys:
            continue
        if event.event_type_value in OPENING_EVENT_TYPES:
            openings[key] += 1
            ends.pop(key, None)
        else:
            ends[key] = event
    return openings, ends


def _message(cause: Any) -> str:
    """What a cause says: its text, or the message of an error (info)."""
    message = cause if isinstance(cause, str) else getattr(cause, "message", None)
    return str(message).strip() if message else ""
