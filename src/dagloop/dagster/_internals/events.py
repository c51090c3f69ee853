"""Step and engine events dagloop reports itself, built as Dagster builds its own."""

from __future__ import annotations

import logging
import os
from typing import Any

from dagloop.dagster._internals.names import (
    DagsterEvent,
    DagsterEventType,
    EngineEventData,
    ErrorSource,
    PlanExecutionContext,
    StepExecutionContext,
    step_failure_event_from_exc_info,
)


def step_failure_for_interrupt(step_context: StepExecutionContext, exc_info: Any) -> DagsterEvent:
    """The STEP_FAILURE Dagster itself reports for a step stopped by an interrupt."""
    event: DagsterEvent = step_failure_event_from_exc_info(
        step_context, exc_info, error_source=ErrorSource.INTERRUPT
    )
    return event


def warning_engine_event(
    context: StepExecutionContext | PlanExecutionContext, message: str, data: EngineEventData
) -> DagsterEvent:
    """An engine event of a step (or of the run, given a plan context), logged at WARNING
    (Dagster logs engine events at DEBUG, which a console or UI filtered to warnings
    hides)."""
    step = context.step if isinstance(context, StepExecutionContext) else None
    event = DagsterEvent(
        event_type_value=DagsterEventType.ENGINE_EVENT.value,
        job_name=context.job_name,
        step_handle=step.handle if step is not None else None,
        node_handle=step.node_handle if step is not None else None,
        step_kind_value=step.kind.value if step is not None else None,
        logging_tags=context.event_tags if isinstance(context, StepExecutionContext) else None,
        event_specific_data=data,
        message=message,
        pid=os.getpid(),
    )
    context.log.log_dagster_event(level=logging.WARNING, msg=message, dagster_event=event)
    return event
