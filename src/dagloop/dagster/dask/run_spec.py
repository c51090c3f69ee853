"""What the workers are sent: the run's spec (once per worker) and, with each step, the
part of the run's known state that step reads."""

from __future__ import annotations

import dagster as dg

from dagloop.dagster._internals import (
    ExecutionPlan,
    ExecutionStep,
    KnownExecutionState,
    PlanExecutionContext,
    ReconstructableJob,
    event_log_in_memory,
)
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.dask.config import DaskConfig
from dagloop.dagster.dask.session import RunSpec


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
