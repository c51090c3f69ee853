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


EventLogWrites = Literal["batched", "direct"]


def default_sync_threads() -> int:
    """Resolved where the run executes (the run worker), not where the job is defined."""
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
            "A step over budget fails: an async step is cancelled at its current await, a "
            "sync step is interrupted at its next Python bytecode (or abandoned after "
            "termination_grace_seconds if it is stuck in C code)."
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
            "How long a step running synchronous code in a worker thread gets to stop "
            "after it was interrupted (termination, step timeout) before it is reported "
            "failed and abandoned: nothing it does afterwards reaches the run."
        ),
    ),
    "event_log_writes": dg.Field(
        dg.Enum("DagloopEventLogWrites", [dg.EnumValue("batched"), dg.EnumValue("direct")]),
        default_value="batched",
        description=(
            "'batched': one writer thread stores the run's step events and logs behind, "
            "many per transaction, and a step starts only once the entries of the steps "
            "before it are stored. 'direct': Dagster's own behaviour, one write per entry "
            "in the logging thread, every entry durable before the step goes on."
        ),
    ),
    "step_dependency_config": get_step_dependency_config_field(),
    "compute_logs": dg.Field(
        dg.Enum("DagloopComputeLogs", [dg.EnumValue("per_step"), dg.EnumValue("per_run")]),
        default_value="per_step",
        description=(
            "'per_step' (default): what a step writes to sys.stdout/sys.stderr goes to its "
            "own compute log (its stdout/stderr tabs in the UI), opened when the step first "
            "writes something of its own; the rest goes to the run's. 'per_run': one "
            "capture for the whole run, as Dagster's in-process executor."
        ),
    ),
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
    if value is not None and not (math.isfinite(value) and value > 0):
        raise ExecutorConfigError(key, value, "expected a positive, finite number of seconds")
    return None if value is None else float(value)


def _tag_concurrency_limits(config: Mapping[str, Any]) -> tuple[dict[str, Any], ...]:
    """A limit below 1 would never let a matching step start: the run would wait for
    ever (as it does under Dagster's multiprocess executor). Rejected up front."""
    limits = tuple(config.get("tag_concurrency_limits") or ())
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


def step_budget(op_name: str, step_key: str, tags: Mapping[str, str]) -> float | None:
    """The time budget an op's tag sets, None if untagged; a bad value names the op."""
    tagged = tags.get(STEP_TIMEOUT_TAG)
    if tagged is None:
        return None
    try:
        budget = float(tagged)
    except ValueError:
        budget = math.nan
    if not (math.isfinite(budget) and budget > 0):
        raise dg.DagsterInvalidConfigError(
            f"Op '{op_name}' (step '{step_key}'): tag '{STEP_TIMEOUT_TAG}' must be a positive, "
            f"finite number of seconds, got {tagged!r}.",
            [],
            tagged,
        )
    return budget


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
    event_log_writes: EventLogWrites = "batched"
    step_dependency_config: StepDependencyConfig = field(
        default_factory=StepDependencyConfig.default
    )
    dask: DaskConfig | None = None
    compute_logs: Literal["per_step", "per_run"] = "per_step"

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> AsyncExecutorConfig:
        sync_threads = _positive_int(config, "sync_threads")
        grace = config.get("termination_grace_seconds", 5.0)
        if not (math.isfinite(grace) and grace >= 0):
            raise ExecutorConfigError(
                "termination_grace_seconds", grace, "expected zero or more, finite seconds"
            )
        retries = RetryMode.from_config(config["retries"])
        assert retries is not None, "the retries field has a default"
        return cls(
            retries=retries,
            max_concurrent=_positive_int(config, "max_concurrent"),
            sync_threads=sync_threads if sync_threads is not None else default_sync_threads(),
            tag_concurrency_limits=_tag_concurrency_limits(config),
            step_host=config.get("step_host", "greenlet"),
            step_timeout_seconds=_positive_seconds(config, "step_timeout_seconds"),
            blocked_loop_warning_seconds=_positive_seconds(config, "blocked_loop_warning_seconds")
            or 0.5,
            termination_grace_seconds=float(grace),
            event_log_writes=config.get("event_log_writes", "batched"),
            step_dependency_config=StepDependencyConfig.from_config(
                config.get("step_dependency_config")
            ),
            dask=DaskConfig.from_config(config.get("dask")),
            compute_logs=config.get("compute_logs", "per_step"),
        )
