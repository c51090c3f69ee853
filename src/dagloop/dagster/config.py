"""The executor's config schema and its validated, typed form.

`AsyncExecutorConfig`'s field defaults are the only statement of each default: the
schema's `default_value`s and `from_config` read them.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

import dagster as dg

from dagloop.dagster._internals import (
    RetryMode,
    StepDependencyConfig,
    get_retries_config,
    get_step_dependency_config_field,
    get_tag_concurrency_limits_config,
)
from dagloop.dagster.dask.config import DASK_CONFIG_SHAPE, DaskConfig
from dagloop.dagster.errors import ExecutorConfigError
from dagloop.dagster.schema_defaults import choice, schema_from_table
from dagloop.dagster.tags import STEP_TIMEOUT_TAG

T = TypeVar("T")

StepHost = Literal["greenlet", "thread"]
EventLogWrites = Literal["batched", "direct"]
ComputeLogs = Literal["per_step", "per_run"]


def default_sync_threads() -> int:
    """Resolved where the run executes (the run worker), not where the job is defined."""
    return min(32, (os.cpu_count() or 1) + 4)


def _dagster_default_retries() -> RetryMode:
    """The retry mode of Dagster's own `retries` field default, which the schema uses."""
    mode = RetryMode.from_config(get_retries_config().default_value)
    assert mode is not None, "Dagster's retries field has a default"
    return mode


@dataclass(frozen=True)
class AsyncExecutorConfig:
    """The executor's validated config; each field's default is the executor's."""

    retries: RetryMode = field(default_factory=_dagster_default_retries)
    max_concurrent: int | None = None
    sync_threads: int = field(default_factory=default_sync_threads)
    tag_concurrency_limits: tuple[dict[str, Any], ...] = ()
    step_host: StepHost = "greenlet"
    step_timeout_seconds: float | None = None
    blocked_loop_warning_seconds: float = 0.5
    termination_grace_seconds: float = 5.0
    event_log_writes: EventLogWrites = "batched"
    step_dependency_config: StepDependencyConfig = field(
        default_factory=StepDependencyConfig.default
    )
    dask: DaskConfig | None = None
    compute_logs: ComputeLogs = "per_step"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AsyncExecutorConfig:
        """Validate the executor's config (the schema's shape; a key left out or None
        takes the default)."""
        given = {key: value for key, value in config.items() if value is not None}
        default = cls()
        grace = given.get("termination_grace_seconds", default.termination_grace_seconds)
        if not (math.isfinite(grace) and grace >= 0):
            raise ExecutorConfigError(
                "termination_grace_seconds", grace, "expected zero or more, finite seconds"
            )
        retries = RetryMode.from_config(given["retries"]) if "retries" in given else None
        dependencies = given.get("step_dependency_config")
        return cls(
            retries=retries if retries is not None else default.retries,
            max_concurrent=_positive_int(given, "max_concurrent", default.max_concurrent),
            sync_threads=_positive_int(given, "sync_threads", default.sync_threads),
            tag_concurrency_limits=_tag_concurrency_limits(given, default.tag_concurrency_limits),
            step_host=given.get("step_host", default.step_host),
            step_timeout_seconds=_positive_seconds(
                given, "step_timeout_seconds", default.step_timeout_seconds
            ),
            blocked_loop_warning_seconds=_positive_seconds(
                given, "blocked_loop_warning_seconds", default.blocked_loop_warning_seconds
            ),
            termination_grace_seconds=float(grace),
            event_log_writes=given.get("event_log_writes", default.event_log_writes),
            step_dependency_config=(
                StepDependencyConfig.from_config(dependencies)
                if dependencies is not None
                else default.step_dependency_config
            ),
            dask=DaskConfig.from_config(given.get("dask", default.dask)),
            compute_logs=given.get("compute_logs", default.compute_logs),
        )


def _positive_int(config: Mapping[str, Any], key: str, default: T) -> int | T:
    value: int | None = config.get(key)
    if value is None:
        return default
    if value < 1:
        raise ExecutorConfigError(key, value, "expected a positive integer")
    return value


def _positive_seconds(config: Mapping[str, Any], key: str, default: T) -> float | T:
    value = config.get(key)
    if value is None:
        return default
    if not (math.isfinite(value) and value > 0):
        raise ExecutorConfigError(key, value, "expected a positive, finite number of seconds")
    return float(value)


def _tag_concurrency_limits(
    config: Mapping[str, Any], default: tuple[dict[str, Any], ...]
) -> tuple[dict[str, Any], ...]:
    """A limit below 1 would never let a matching step start: the run would wait for
    ever (as it does under Dagster's multiprocess executor). Rejected up front."""
    limits = tuple(config.get("tag_concurrency_limits", default))
    for index, limit in enumerate(limits):
        value = limit.get("limit")
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise ExecutorConfigError(
                f"tag_concurrency_limits[{index}].limit",
                value,
                f"expected a positive integer; a limit of {value!r} on tag "
                f"'{limit.get('key')}' would never let a matching step start",
            )
    return limits


#: The executor's config schema, in the order the UI shows it: Dagster's own fields as
#: Dagster defines them, and for each of dagloop's options its config type and
#: description (its default is `AsyncExecutorConfig`'s).
EXECUTOR_CONFIG_SCHEMA: dict[str, Any] = schema_from_table(
    AsyncExecutorConfig,
    {
        "max_concurrent": (
            dg.Noneable(int),
            "Most steps in flight at once across the run (async and sync). "
            "Unset means no limit beyond the other controls.",
        ),
        # Unset: the dataclass resolves it where the run executes.
        "sync_threads": dg.Field(
            dg.Noneable(int),
            default_value=None,
            description=(
                "Worker threads for steps whose compute function is synchronous; they run "
                "there so they never block the event loop. Unset: min(32, CPUs + 4) of the "
                "machine the run executes on."
            ),
        ),
        "tag_concurrency_limits": get_tag_concurrency_limits_config(),
        "retries": get_retries_config(),
        "step_host": (
            choice("DagloopStepHost", StepHost),
            "Where the Dagster bookkeeping of an async step runs: 'greenlet' on the event "
            "loop itself (default, the cheapest), or 'thread' in a worker thread that "
            "hands the op's coroutine to the loop.",
        ),
        "step_timeout_seconds": (
            dg.Noneable(float),
            f"Default time budget of a step; the op tag '{STEP_TIMEOUT_TAG}' overrides it. "
            "A step over budget fails: an async step is cancelled at its current await, a "
            "sync step is interrupted at its next Python bytecode (or abandoned after "
            "termination_grace_seconds if it is stuck in C code).",
        ),
        "blocked_loop_warning_seconds": (
            float,
            "Report an engine event when one step holds the event loop (runs without "
            "awaiting) longer than this.",
        ),
        "termination_grace_seconds": (
            float,
            "How long a step running synchronous code in a worker thread gets to stop "
            "after it was interrupted (termination, step timeout) before it is reported "
            "failed and abandoned: nothing it does afterwards reaches the run.",
        ),
        "event_log_writes": (
            choice("DagloopEventLogWrites", EventLogWrites),
            "'batched': one writer thread stores the run's step events and logs behind, "
            "many per transaction, and a step starts only once the entries of the steps "
            "before it are stored. 'direct': Dagster's own behaviour, one write per entry "
            "in the logging thread, every entry durable before the step goes on.",
        ),
        "step_dependency_config": get_step_dependency_config_field(),
        "compute_logs": (
            choice("DagloopComputeLogs", ComputeLogs),
            "'per_step' (default): what a step writes to sys.stdout/sys.stderr goes to its "
            "own compute log (its stdout/stderr tabs in the UI), opened when the step first "
            "writes something of its own; the rest goes to the run's. 'per_run': one "
            "capture for the whole run, as Dagster's in-process executor.",
        ),
        "dask": (
            dg.Noneable(DASK_CONFIG_SHAPE),
            "Scale steps out to a Dask cluster: {address: ...} or {processes: K}. Needs a "
            "reconstructable job and a persistent instance.",
        ),
    },
)
