"""The Dagster `Executor` and `ExecutorDefinition` that run a plan on one event loop."""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    ExecuteRunWithPlanIterable,
    ExecutionPlan,
    Executor,
    PlanExecutionContext,
    PlanExecutionContextManager,
    PlanOrchestrationContext,
    RetryMode,
    StepDependencyConfig,
    multiple_process_executor_requirements,
    run_with_steps_to_execute,
    share_scoped_resources,
)
from dagloop.dagster.attempts import AttemptTable
from dagloop.dagster.config import EXECUTOR_CONFIG_SCHEMA, AsyncExecutorConfig
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.orchestrator import Orchestrator
from dagloop.dagster.python_logs import route_python_logs
from dagloop.dagster.reexecution import with_unstarted_mapped_steps
from dagloop.dagster.step_run import StepRun
from dagloop.dagster.tags import check_op_tags
from dagloop.runtime.gc_tuning import tuned_gc
from dagloop.runtime.loop_driver import iterate_on_loop


@dataclass(frozen=True, eq=False)
class AsyncExecutor(Executor):
    """Runs every step of a run concurrently on the event loop Dagster created for it.

    Resources are initialised on that loop (as in the in-process executor), so async
    resources are shared by all steps. Async steps run natively on the loop; steps
    whose compute function is synchronous run in worker threads.
    """

    config: AsyncExecutorConfig

    @property
    def retries(self) -> RetryMode:
        return self.config.retries

    @property
    def step_dependency_config(self) -> StepDependencyConfig:
        return self.config.step_dependency_config

    def execute(
        self, plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        config = self.config
        # Bad op tags fail the run here, before resources are opened or any step runs.
        check_op_tags(execution_plan)
        execution_plan, added = with_unstarted_mapped_steps(plan_context, execution_plan)
        if added:
            shown = ", ".join(added[:10]) + (", ..." if len(added) > 10 else "")
            yield DagsterEvent.engine_event(
                plan_context,
                f"Re-execution from failure: also running {len(added)} step(s) that have no "
                f"stored success in run {plan_context.dagster_run.parent_run_id} or before "
                "(mapped steps that never started there, and what depends on them), which "
                f"Dagster's selection leaves out: {shown}",
                event_specific_data=EngineEventData(
                    metadata={"added_steps": dg.MetadataValue.json(added)}
                ),
            )
        step_keys = execution_plan.step_keys_to_execute
        dagster_run = plan_context.dagster_run
        if added:
            # Steps read `dagster_run.step_keys_to_execute` to tell their own outputs from
            # outputs of earlier runs: the added ones store theirs in this run.
            dagster_run = run_with_steps_to_execute(dagster_run, step_keys)
        yield DagsterEvent.engine_event(
            plan_context,
            f"Executing steps on one asyncio event loop (pid: {os.getpid()}; async steps "
            f"hosted in {config.step_host}s; {config.sync_threads} worker threads for sync "
            "steps)",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )
        yield from ExecuteRunWithPlanIterable(
            execution_plan=execution_plan,
            iterator=self._run_on_loop,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=execution_plan,
                run_config=plan_context.run_config,
                dagster_run=dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
                step_dependency_config=config.step_dependency_config,
            ),
        )
        yield DagsterEvent.engine_event(
            plan_context,
            f"Finished steps on the event loop (pid: {os.getpid()})",
            event_specific_data=EngineEventData.in_process(os.getpid(), step_keys),
        )

    def _run_on_loop(
        self, job_context: PlanExecutionContext, execution_plan: ExecutionPlan
    ) -> Iterator[DagsterEvent]:
        orchestrator: Orchestrator | None = None

        def fail_run(error: BaseException) -> None:
            if orchestrator is not None:
                orchestrator.fail_run(error)

        # One authority on what each step attempt may report, on both paths its events
        # take: to storage (the event log) and to the caller (the orchestrator).
        attempts: AttemptTable[StepRun] = AttemptTable()
        event_log = RunEventLog(
            job_context.instance,
            job_context.run_id,
            job_context.event_loop,
            batched=self.config.event_log_writes == "batched",
            on_failure=fail_run,
            attempts=attempts,
        )
        remote = None
        if self.config.dask is not None:
            from dagloop.dagster.dask.runner import DaskSteps

            remote = DaskSteps(
                self.config.dask,
                job_context,
                execution_plan,
                self,
                self.config,
                event_log,
                fail_run,
            )
        orchestrator = Orchestrator(
            job_context, execution_plan, self.config, attempts, remote, event_log
        )
        # Resources are initialised by now: every step context can share them.
        share_scoped_resources(job_context)

        async def main(emit: Callable[[DagsterEvent], None]) -> None:
            event_log.start()
            try:
                if remote is None:
                    await orchestrator.run(emit)
                else:
                    async with remote.open(emit):
                        await orchestrator.run(emit)
            finally:
                # Every entry of the run is written before the executor reports its end.
                await event_log.aclose()
            if event_log.store.failure is not None:
                raise event_log.store.failure
            if event_log.store.entries_written:
                emit(
                    DagsterEvent.engine_event(
                        job_context,
                        f"dagloop wrote {event_log.store.entries_written} event-log entries of "
                        f"this run in {event_log.store.writes} writes",
                        EngineEventData(),
                    )
                )

        # Many steps in flight in one process: Python log records go to the step that
        # logged them (dagster/python_logs.py).
        unroute_python_logs = route_python_logs(job_context)
        # The plan and the resources are set up: what is alive now stays alive for the
        # whole run, so the collector need not scan it again while the steps run.
        try:
            with tuned_gc():
                yield from iterate_on_loop(
                    job_context.event_loop,
                    main,
                    on_interrupt=lambda exc: orchestrator.request_interrupt(
                        f"{type(exc).__name__} reached the event loop"
                    ),
                )
        finally:
            unroute_python_logs()


def _requirements(config: Any) -> Any:
    """Steps on a Dask cluster need what Dagster's multiprocess executor needs."""
    if isinstance(config, dict) and config.get("dask") is not None:
        return multiple_process_executor_requirements()
    return []


@dg.executor(name="dagloop_async", config_schema=EXECUTOR_CONFIG_SCHEMA, requirements=_requirements)
def async_executor(init_context: dg.InitExecutorContext) -> AsyncExecutor:
    """Run every step of a run concurrently on one shared asyncio event loop.

    Use as ``@dg.job(executor_def=async_executor)``, ``dg.Definitions(executor=async_executor)``
    or ``async_executor.configured({"max_concurrent": 50})``. Config keys:
    ``max_concurrent``, ``sync_threads``, ``tag_concurrency_limits``, ``retries``,
    ``step_host``, ``step_timeout_seconds``, ``blocked_loop_warning_seconds``,
    ``termination_grace_seconds``, ``event_log_writes``, ``compute_logs``, ``dask`` (scale
    steps out to a Dask cluster; see docs/dask.md).
    """
    return AsyncExecutor(AsyncExecutorConfig.from_config(init_context.executor_config))
