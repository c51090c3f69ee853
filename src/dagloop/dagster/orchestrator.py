"""The coroutine that runs a Dagster execution plan on the run's event loop.

Readiness, retries, skips, dynamic mappings, `max_concurrent`, tag concurrency limits
and instance pools are all decided by Dagster's own `ActiveExecution`; this module
only starts what it hands out, as soon as it hands it out, and reports back.
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from typing import Protocol

import dagster as dg

from dagloop.dagster._internals import (
    ActiveExecution,
    DagsterEvent,
    DagsterExecutionInterruptedError,
    EngineEventData,
    ExecutionPlan,
    ExecutionStep,
    InstanceConcurrencyContext,
    KnownExecutionState,
    PlanExecutionContext,
    create_compute_log_file_key,
    pop_captured_interrupt,
    serializable_error_info_from_exc_info,
    step_failure_for_interrupt,
)
from dagloop.dagster.config import STEP_TIMEOUT_TAG, AsyncExecutorConfig
from dagloop.dagster.step_hosting import StepHosting, blocked_loop_warning
from dagloop.dagster.step_run import LoopBridge, StepRun, StepTimeoutError, choose_host

#: How often the orchestrator looks for a captured SIGINT/SIGTERM while idle.
INTERRUPT_POLL_SECONDS = 0.1
#: How often it checks whether the run was marked CANCELING in the instance.
CANCEL_POLL_SECONDS = 0.5

_INTERRUPTS = (KeyboardInterrupt, DagsterExecutionInterruptedError)


class _Wakeup:
    """A level-triggered wakeup with an optional timeout, cheaper than Event+wait_for."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._future: asyncio.Future[None] | None = None
        self._pending = False

    def set(self) -> None:
        self._pending = True
        if self._future is not None and not self._future.done():
            self._future.set_result(None)

    async def wait(self, timeout: float | None) -> None:
        if self._pending:
            self._pending = False
            return
        self._future = self._loop.create_future()
        timer = None
        if timeout is not None:
            timer = self._loop.call_later(max(timeout, 0.0), self.set)
        try:
            await self._future
        finally:
            self._future = None
            self._pending = False
            if timer is not None:
                timer.cancel()


class RemoteSteps(Protocol):
    """Runs chosen steps somewhere else (e.g. a Dask cluster) and reports their events."""

    def accepts(self, step: ExecutionStep) -> bool: ...

    async def execute(
        self,
        run: StepRun,
        known_state: KnownExecutionState,
        accept: Callable[[DagsterEvent], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        """Run `run`'s step to its end, passing each of its events to `accept`. A
        cancellation with `run.cancel_reason` set stops the step; if it cannot report
        its own terminal event, call `fail(run.cancel_reason)`."""
        ...


class Orchestrator:
    def __init__(
        self,
        job_context: PlanExecutionContext,
        execution_plan: ExecutionPlan,
        config: AsyncExecutorConfig,
        remote: RemoteSteps | None = None,
    ) -> None:
        self._job_context = job_context
        self._plan = execution_plan
        self._config = config
        self._loop: asyncio.AbstractEventLoop = job_context.event_loop
        self._running: set[StepRun] = set()
        self._emit: Callable[[DagsterEvent], None] = lambda event: None
        self._active: ActiveExecution | None = None
        self._wakeup = _Wakeup(self._loop)
        self._stopping = False
        self._interrupt_requested: str | None = None
        self._raised: BaseException | None = None
        self._hosting = StepHosting(
            self._loop, sync_threads=config.sync_threads, host_threads=config.max_concurrent
        )
        self._last_cancel_poll = 0.0
        self._remote = remote
        self._remote_runs: dict[StepRun, KnownExecutionState] = {}

    # -- entry points ------------------------------------------------------------------

    def request_interrupt(self, why: str) -> None:
        """Ask the run to stop: in-flight async steps are cancelled, nothing new starts."""
        if self._interrupt_requested is None:
            self._interrupt_requested = why
        self._wakeup.set()

    async def run(self, emit: Callable[[DagsterEvent], None]) -> None:
        self._emit = emit
        bridge = LoopBridge(self._loop)
        bridge.install()
        try:
            with ExitStack() as stack:
                job_context = self._job_context
                concurrency = stack.enter_context(
                    InstanceConcurrencyContext(job_context.instance, job_context.dagster_run)
                )
                active = stack.enter_context(
                    self._plan.start(
                        retry_mode=self._config.retries,
                        max_concurrent=self._config.max_concurrent,
                        tag_concurrency_limits=list(self._config.tag_concurrency_limits),
                        instance_concurrency_context=concurrency,
                        step_dependency_config=self._config.step_dependency_config,
                    )
                )
                self._active = active
                self._start_run_log_capture(stack)
                await self._schedule(active)
                if self._raised is not None:
                    raise self._raised
                if self._stopping:
                    # As Dagster's multiprocess executor does once its steps wound down:
                    # the run is reported canceled (if requested) or interrupted.
                    self._emit(
                        DagsterEvent.engine_event(
                            job_context,
                            "dagloop async executor: every in-flight step has stopped",
                            EngineEventData(),
                        )
                    )
                    raise DagsterExecutionInterruptedError()
        finally:
            bridge.uninstall()
            self._hosting.shutdown()

    # -- scheduling loop ---------------------------------------------------------------

    async def _schedule(self, active: ActiveExecution) -> None:
        job_context = self._job_context
        while True:
            self._poll_for_interrupts()
            if self._interrupt_requested is not None and not self._stopping:
                self._begin_stopping(active, self._interrupt_requested)

            if not self._stopping:
                for step in active.get_steps_to_execute():
                    self._start(step, active)
                self._emit_all(active.concurrency_event_iterator(job_context))
            self._emit_all(active.plan_events_iterator(job_context))

            if not self._running and (self._stopping or active.is_complete):
                return
            await self._wakeup.wait(self._idle_timeout(active))

    def _idle_timeout(self, active: ActiveExecution) -> float:
        timeout = INTERRUPT_POLL_SECONDS
        if not self._stopping:
            until_ready: float = active.sleep_interval()
            if until_ready > 0:
                timeout = min(timeout, until_ready)
        return timeout

    def _poll_for_interrupts(self) -> None:
        if pop_captured_interrupt():
            self.request_interrupt("received a termination signal")
        now = time.monotonic()
        poll_due = now - self._last_cancel_poll >= CANCEL_POLL_SECONDS
        if self._interrupt_requested is None and poll_due:
            self._last_cancel_poll = now
            run = self._job_context.instance.get_run_by_id(self._job_context.run_id)
            if run is not None and run.status == dg.DagsterRunStatus.CANCELING:
                self.request_interrupt("the run was marked CANCELING")

    def _begin_stopping(self, active: ActiveExecution, why: str) -> None:
        self._stopping = True
        active.mark_interrupted()
        in_flight = sorted(run.key for run in self._running)
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                f"dagloop async executor: {why} - cancelling {len(in_flight)} in-flight step(s)",
                EngineEventData.interrupted(in_flight),
            )
        )
        uninterruptible = [
            run for run in self._running if not run.cancel(DagsterExecutionInterruptedError())
        ]
        if uninterruptible:
            self._loop.call_later(
                self._config.termination_grace_seconds, self._abandon_threads, uninterruptible
            )

    def _abandon_threads(self, runs: Iterable[StepRun]) -> None:
        """Report steps stuck in worker threads as failed once the grace period is over."""
        for run in runs:
            if run.finished:
                continue
            run.abandoned = True
            self._emit(
                DagsterEvent.engine_event(
                    run.context,
                    f"Step '{run.key}' was still running synchronous code in a worker thread "
                    f"{self._config.termination_grace_seconds:g} s after termination was "
                    "requested; it is reported failed and its thread is left to finish.",
                    EngineEventData.interrupted([run.key]),
                )
            )
            self._fail_from_orchestrator(run, DagsterExecutionInterruptedError())
            self._finish(run)

    # -- steps -------------------------------------------------------------------------

    def _start(self, step: ExecutionStep, active: ActiveExecution) -> None:
        known_state = active.get_known_state()
        context = self._job_context.for_step(step, known_state)
        remote = self._remote is not None and self._remote.accepts(step)
        # A remote step is awaited by its task, which is cancelled like a greenlet's.
        host = "greenlet" if remote else choose_host(context, self._config.step_host)
        run = StepRun(
            step=step,
            context=context,
            host=host,
            budget=self._budget_for(step),
            report_hold=self._report_hold,
        )
        self._running.add(run)
        if remote:
            self._remote_runs[run] = known_state
        run.task = self._loop.create_task(self._execute(run), name=f"dagloop-step:{step.key}")

    def _budget_for(self, step: ExecutionStep) -> float | None:
        tagged = step.tags.get(STEP_TIMEOUT_TAG)
        if tagged is None:
            return self._config.step_timeout_seconds
        try:
            budget = float(tagged)
        except ValueError:
            budget = float("nan")
        if not budget > 0:
            raise dg.DagsterInvalidConfigError(
                f"Op tag '{STEP_TIMEOUT_TAG}' of step '{step.key}' must be a positive number "
                f"of seconds, got {tagged!r}.",
                [],
                tagged,
            )
        return budget

    async def _execute(self, run: StepRun) -> None:
        if run.budget is not None:
            run.deadline_timer = self._loop.call_later(run.budget, self._expire, run)
        try:
            if run in self._remote_runs:
                assert self._remote is not None
                await self._remote.execute(
                    run,
                    self._remote_runs[run],
                    lambda event: self._accept(run, event),
                    lambda error: self._fail_from_orchestrator(run, error),
                )
            else:
                await self._hosting.run_step(run, lambda event: self._accept(run, event))
            # Before hooks, as in-process: a retried step may start its next attempt
            # while this attempt's hooks still run.
            self._verify(run)
            if run not in self._remote_runs and self._hosting.has_hooks(run):
                await self._hosting.run_hooks(run, lambda event: self._accept(run, event))
        except _INTERRUPTS as exc:
            # Dagster re-raises interrupts after reporting the step failed. One we did
            # not cause (user code raising KeyboardInterrupt) stops the run, as it does
            # in the in-process executor.
            if not self._stopping:
                self._raised = self._raised or exc
                self.request_interrupt(f"step '{run.key}' raised {type(exc).__name__}")
        except asyncio.CancelledError:
            # Only reachable if the orchestrator itself is being torn down.
            raise
        except BaseException as exc:
            if self._raised is None:
                self._raised = exc
            self.request_interrupt(f"step '{run.key}' raised {type(exc).__name__}")
        finally:
            if not run.abandoned:
                self._finish(run)

    def _finish(self, run: StepRun) -> None:
        if run.finished:
            return
        run.finished = True
        if run.deadline_timer is not None:
            run.deadline_timer.cancel()
        self._verify(run)
        self._running.discard(run)
        self._remote_runs.pop(run, None)
        self._wakeup.set()

    def _verify(self, run: StepRun) -> None:
        """Once per attempt: a step that ended without a terminal event is abandoned.

        Only an attempt that reported none is checked: once an attempt reported
        STEP_UP_FOR_RETRY, its next attempt may already be in flight under the same key
        (thread-hosted and remote steps report asynchronously)."""
        if run.verified:
            return
        run.verified = True
        if run.reported_terminal:
            return
        assert self._active is not None
        self._active.verify_complete(self._job_context, run.key)

    def _accept(self, run: StepRun, event: DagsterEvent) -> None:
        if run.abandoned:
            return
        self._emit(event)
        if event.is_step_success or event.is_step_failure or event.is_step_up_for_retry:
            run.reported_terminal = True
        if not event.is_hook_event:  # as in-process: hook events are reported, not tracked
            assert self._active is not None
            self._active.handle_event(event)

    def _expire(self, run: StepRun) -> None:
        budget = run.budget
        assert budget is not None
        error = StepTimeoutError(run.step.node_handle.name, run.key, budget)
        if run.cancel(error):
            return
        if run.host is None and not run.finished:
            self._emit(
                DagsterEvent.engine_event(
                    run.context,
                    f"Step '{run.key}' is over its time budget of {budget:g} s. It runs "
                    "synchronous code in a worker thread, which cannot be interrupted; it "
                    "keeps running and will end on its own.",
                    EngineEventData(),
                )
            )

    def _report_hold(self, run: StepRun, held: float) -> None:
        # Called on the loop thread only: greenlet switches and coroutine resumes.
        warning = blocked_loop_warning(run, held, self._config.blocked_loop_warning_seconds)
        if warning is not None:
            self._emit(warning)

    def _fail_from_orchestrator(self, run: StepRun, error: BaseException) -> None:
        try:
            raise error
        except BaseException:
            event = step_failure_for_interrupt(run.context, sys.exc_info())
        self._emit(event)
        assert self._active is not None
        self._active.handle_event(event)

    # -- plumbing ----------------------------------------------------------------------

    def _emit_all(self, events: Iterable[DagsterEvent]) -> None:
        for event in events:
            self._emit(event)

    def _start_run_log_capture(self, stack: ExitStack) -> None:
        """Capture the run's stdout/stderr once for the process, as the in-process
        executor does."""
        job_context = self._job_context
        manager = job_context.instance.compute_log_manager
        step_keys = [step.key for step in self._plan.get_steps_to_execute_in_topo_order()]
        file_key = create_compute_log_file_key()
        log_key = manager.build_log_key_for_run(job_context.run_id, file_key)
        try:
            log_context = stack.enter_context(manager.capture_logs(log_key))
            self._emit(DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context))
        except Exception:
            self._emit(
                DagsterEvent.engine_event(
                    job_context,
                    "Exception while setting up compute log capture",
                    EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
                )
            )
