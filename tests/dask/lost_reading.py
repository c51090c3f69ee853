"""What a run stored about the Dask workers it lost: their engine events, and the errors
its steps failed or retried with."""

from __future__ import annotations

from typing import Any

import dagster as dg

E = dg.DagsterEventType


def lost_events(entries: list[dg.EventLogEntry]) -> list[Any]:
    """The engine events saying which worker the run lost and which steps it took along."""
    return [
        r.dagster_event
        for r in entries
        if r.dagster_event is not None
        and r.dagster_event.event_type == E.ENGINE_EVENT
        and "lost_steps" in r.dagster_event.engine_event_data.metadata
    ]


def step_errors(entries: list[dg.EventLogEntry]) -> list[tuple[str, Any]]:
    """(step key, error) of each stored STEP_FAILURE and STEP_UP_FOR_RETRY."""
    found = []
    for r in entries:
        event = r.dagster_event
        if event is None or r.step_key is None:
            continue
        if event.event_type == E.STEP_FAILURE:
            found.append((r.step_key, event.step_failure_data.error))
        elif event.event_type == E.STEP_UP_FOR_RETRY:
            found.append((r.step_key, event.event_specific_data.error))
    return found
