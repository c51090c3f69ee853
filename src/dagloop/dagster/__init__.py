"""dagloop's Dagster integration: ``from dagloop.dagster import async_executor``.

Needs the ``dagster`` extra (``pip install "dagloop[dagster]"``); without Dagster,
importing this package raises an ImportError that says so.
"""

from dagloop._extras import require

require("dagster", extra="dagster", feature="dagloop.dagster (the Dagster executor)")

# The imports below need Dagster: they come after the check above.
from dagloop.dagster.config import AsyncExecutorConfig  # noqa: E402
from dagloop.dagster.errors import (  # noqa: E402
    EventLogWriteError,
    ExecutorConfigError,
    StepTimeoutError,
)
from dagloop.dagster.executor import AsyncExecutor, async_executor  # noqa: E402
from dagloop.dagster.in_process import execute_in_process  # noqa: E402
from dagloop.dagster.tags import PLACEMENT_TAG, STEP_TIMEOUT_TAG, STREAM_TAG  # noqa: E402

__all__ = [
    "PLACEMENT_TAG",
    "STEP_TIMEOUT_TAG",
    "STREAM_TAG",
    "AsyncExecutor",
    "AsyncExecutorConfig",
    "EventLogWriteError",
    "ExecutorConfigError",
    "StepTimeoutError",
    "async_executor",
    "execute_in_process",
]
