"""The executor's config schema and its validated, typed form."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg

from dagloop.dagster._internals import (
    RetryMode,
    StepDependencyConfig,
    get_retries_config,
    get_step_dependency_config_field,
    get_tag_concurrency_limits_config,
)
from dagloop.dagster.dask.config import DASK_CONFIG_FIELD, DaskConfig

StepHost = Literal["greenlet", "thread"]

#: Op tag that overrides `step_timeout_seconds` for one op (a number of seconds).
STEP_TIMEOUT_TAG = "dagloop/step_timeout_seconds"


def default_sync_threads() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


EXECUTOR_CONFIG_SCHEMA: dict[str, Any] = {
    "max_concurrent": dg.Field(
        dg.Noneable(int),
        default_value=None,
        description=(
            "Most steps in flight at once across the run (async and sync). "
            "Unset means no limit beyond the other controls."
        ),
    ),
    "sync_threads": dg.Field(
        int,
        default_value=default_sync_threads(),
        description=(
            "Worker threads for steps whose compute function is synchronous; they run "
            "there so they never block the event loop."
        ),
    ),
    "tag_concurrency_limits": get_tag_concurrency_limits_config(),
    "retries": get_retries_config(),
    "step_host": dg.Field(
        dg.Enum("DagloopStepHost", [dg.EnumValue("greenlet"), dg.EnumValue("thread")]),
        default_value="greenlet",
        description=(
            "Where the Dagster bookkeeping of an async step runs: 'greenlet' on the event "
            "loop itself (default, measured fastest), or 'thread' in a worker thread that "
            "hands the op's coroutine to the loop."
        ),
    ),
    "step_timeout_seconds": dg.Field(
        dg.Noneable(float),
        default_value=None,
        description=(
            f"Default time budget of a step; the op tag '{STEP_TIMEOUT_TAG}' overrides it. "
            "An async step over budget is cancelled and fails; a sync step over budget is "
            "reported (threads cannot be interrupted)."
        ),
    ),
    "blocked_loop_warning_seconds": dg.Field(
        float,
        default_value=0.5,
        description=(
            "Report an engine event when one step holds the event loop (runs without "
            "awaiting) longer than this."
        ),
    ),
    "termination_grace_seconds": dg.Field(
        float,
        default_value=5.0,
        description=(
            "On termination, how long to wait for steps running in worker threads to "
            "return before they are reported failed and left behind."
        ),
    ),
    "step_dependency_config": get_step_dependency_config_field(),
    "dask": DASK_CONFIG_FIELD,
}


class ExecutorConfigError(dg.DagsterInvalidConfigError):
    """A config value of the executor that the schema's types alone cannot reject."""

    def __init__(self, key: str, value: object, expectation: str) -> None:
        super().__init__(
            f"Invalid value for execution config key '{key}': {value!r} ({expectation}).",
            [],
            value,
        )
        self.key = key


def _positive_int(config: Mapping[str, Any], key: str) -> int | None:
    value = config.get(key)
    if value is not None and value < 1:
        raise ExecutorConfigError(key, value, "expected a positive integer")
    return value


def _positive_seconds(config: Mapping[str, Any], key: str) -> float | None:
    value = config.get(key)
    if value is not None and (math.isnan(value) or value <= 0 or math.isinf(value)):
        raise ExecutorConfigError(key, value, "expected a positive, finite number of seconds")
    return None if value is None else float(value)


@dataclass(frozen=True)
class AsyncExecutorConfig:
    retries: RetryMode
    max_concurrent: int | None = None
    sync_threads: int = 8
    tag_concurrency_limits: tuple[dict[str, Any], ...] = ()
    step_host: StepHost = "greenlet"
    step_timeout_seconds: float | None = None
    blocked_loop_warning_seconds: float = 0.5
    termination_grace_seconds: float = 5.0
    step_dependency_config: StepDependencyConfig = field(
        default_factory=StepDependencyConfig.default
    )
    dask: DaskConfig | None = None

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AsyncExecutorConfig:
        sync_threads = _positive_int(config, "sync_threads")
        grace = config.get("termination_grace_seconds", 5.0)
        if math.isnan(grace) or grace < 0:
            raise ExecutorConfigError(
                "termination_grace_seconds", grace, "expected zero or more seconds"
            )
        retries = RetryMode.from_config(config["retries"])
        assert retries is not None, "the retries field has a default"
        return cls(
            retries=retries,
            max_concurrent=_positive_int(config, "max_concurrent"),
            sync_threads=sync_threads if sync_threads is not None else default_sync_threads(),
            tag_concurrency_limits=tuple(config.get("tag_concurrency_limits") or ()),
            step_host=config.get("step_host", "greenlet"),
            step_timeout_seconds=_positive_seconds(config, "step_timeout_seconds"),
            blocked_loop_warning_seconds=_positive_seconds(config, "blocked_loop_warning_seconds")
            or 0.5,
            termination_grace_seconds=float(grace),
            step_dependency_config=StepDependencyConfig.from_config(
                config.get("step_dependency_config")
            ),
            dask=DaskConfig.from_config(config.get("dask")),
        )
