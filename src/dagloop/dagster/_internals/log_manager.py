"""A run's log manager: replacing it, and the parts of one a replacement is built from."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from dagloop.dagster._internals.names import (
    DagsterLogHandler,
    DagsterLogManager,
    PlanExecutionContext,
)


def replace_run_log_manager(job_context: PlanExecutionContext, manager: Any) -> Callable[[], None]:
    """Make `manager` the run's log manager (the one `for_step` derives every step's log
    manager from, with `with_tags`); returns what puts the old one back."""
    previous = job_context._log_manager
    job_context._log_manager = manager

    def restore() -> None:
        job_context._log_manager = previous

    return restore


def dagster_handler(manager: DagsterLogManager) -> DagsterLogHandler:
    """The handler a log manager hands its records to (Dagster's loggers and the event
    log), which it attaches to its managed Python loggers while capturing them."""
    handler: DagsterLogHandler = manager._dagster_handler
    return handler


def managed_loggers(manager: DagsterLogManager) -> Sequence[logging.Logger]:
    """The process-wide Python loggers whose records a log manager captures for a step
    (`dg.get_dagster_logger()`, the instance's `managed_python_loggers`)."""
    loggers: Sequence[logging.Logger] = manager._managed_loggers
    return loggers
