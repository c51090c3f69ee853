"""dagloop's Dagster integration: ``from dagloop.dagster import async_executor``."""

from dagloop.dagster.config import STEP_TIMEOUT_TAG, AsyncExecutorConfig
from dagloop.dagster.executor import AsyncExecutor, async_executor
from dagloop.dagster.step_run import StepTimeoutError

__all__ = [
    "STEP_TIMEOUT_TAG",
    "AsyncExecutor",
    "AsyncExecutorConfig",
    "StepTimeoutError",
    "async_executor",
]
