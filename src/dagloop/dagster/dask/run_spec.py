"""What the workers are sent: the run's spec (once per worker) and, with each step, the
part of the run's known state that step reads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    ExecutionPlan,
    ExecutionStep,
    KnownExecutionState,
    PlanExecutionContext,
    ReconstructableJob,
    RetryMode,
    StepDependencyConfig,
    event_log_in_memory,
)
from dagloop.dagster.config import AsyncExecutorConfig, ComputeLogs, StepHost
from dagloop.dagster.dask.config import DaskConfig


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to open a run's session (sent to each worker once)."""

    topic: str
    run_config: dict[str, Any]
    dagster_run: dg.DagsterRun
    instance_ref: Any  # InstanceRef
    recon_job: ReconstructableJob
    retry_mode: RetryMode
    step_dependency_config: StepDependencyConfig
    step_keys_to_execute: list[str]
    known_state: KnownExecutionState | None
    repository_load_data: Any
    step_host: StepHost
    #: "run": the workers send their event-log entries to the run process to write;
    #: "workers": each worker writes them itself.
    events_written_by: str
    sync_threads: int
    host_threads: int
    blocked_loop_warning_seconds: float
    #: The run process takes a worker silent this long as lost (the worker's `Lease`).
    heartbeat_timeout_seconds: float
    #: Each step's stdout/stderr captured on its own (`per_step`), as on the run's loop.
    compute_logs: ComputeLogs


@dataclass(frozen=True)
class StepCommand:
    """One attempt of one step, and the part of the run's known state its execution
    reads (ready inputs, its retry count, the parent run's state)."""

    #: The attempt's token in the run's `AttemptTable`: issued once per attempt.
    token: int
    step_key: str
    known_state: KnownExecutionState
    #: Its time budget in seconds (counted from its STEP_START here), None: none.
    budget: float | None = None


def run_spec(
    topic: str,
    job: ReconstructableJob,
    job_context: PlanExecutionContext,
    execution_plan: ExecutionPlan,
    executor_config: AsyncExecutorConfig,
    config: DaskConfig,
) -> RunSpec:
    """What a worker needs to open the run's session."""
    return RunSpec(
        topic=topic,
        run_config=dict(job_context.run_config),
        dagster_run=job_context.dagster_run,
        instance_ref=job_context.instance.get_ref(),
        recon_job=job,
        retry_mode=executor_config.retries,
        step_dependency_config=executor_config.step_dependency_config,
        step_keys_to_execute=list(execution_plan.step_keys_to_execute),
        known_state=execution_plan.known_state,
        repository_load_data=execution_plan.repository_load_data,
        step_host=executor_config.step_host,
        events_written_by=_who_writes_events(config, job_context.instance),
        sync_threads=executor_config.sync_threads,
        host_threads=config.steps_per_worker,
        blocked_loop_warning_seconds=executor_config.blocked_loop_warning_seconds,
        heartbeat_timeout_seconds=config.heartbeat_timeout_seconds,
        compute_logs=executor_config.compute_logs,
    )


def step_known_state(step: ExecutionStep, known: KnownExecutionState) -> KnownExecutionState:
    """What of the run's known state one step's execution reads (its ready inputs, its
    own retry count, the parent run's state); the dynamic mappings travel separately.
    The full state is O(steps), and would make a fan-out's submissions quadratic."""
    inputs = {
        handle
        for step_input in step.step_inputs
        for handle in step_input.get_step_output_handle_dependencies()
    }
    attempts = known.previous_retry_attempts.get(step.key)
    return KnownExecutionState(
        previous_retry_attempts={step.key: attempts} if attempts is not None else {},
        dynamic_mappings={},
        step_output_versions=known.step_output_versions,
        ready_outputs=inputs & known.ready_outputs,
        parent_state=known.parent_state,
    )


def _who_writes_events(config: DaskConfig, instance: dg.DagsterInstance) -> str:
    """'auto': the workers, each in batches of its own, so the run process does not
    store the cluster's entries (SQLite takes the workers' short transactions one after
    the other); the run process only for storage in its own memory."""
    if config.events_written_by != "auto":
        return config.events_written_by
    return "run" if event_log_in_memory(instance) else "workers"
