"""The coroutine that runs a Dagster execution plan on the run's event loop.

Readiness, retries, skips, dynamic mappings, `max_concurrent`, tag concurrency limits
and instance pools are all decided by Dagster's own `ActiveExecution`; what each step
attempt may report is decided by the run's `AttemptTable` (attempts.py), and when the
run stops by `Termination` (termination.py). This module drives them: it starts what
`ActiveExecution` hands out, as soon as it hands it out, awaits it, and passes each
event on to Dagster.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack

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
)
from dagloop.dagster.attempts import AttemptState, AttemptTable
from dagloop.dagster.compute_logs import RunLogCapture, open_for_run
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.errors import StepTimeoutError
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.remote import RemoteAttempt, RemoteSteps, Where
from dagloop.dagster.step_hosting import StepHosting
from dagloop.dagster.step_reports import StepReports
from dagloop.dagster.step_run import LoopBridge, StepRun, choose_host
from dagloop.dagster.streaming import StreamedFanOut, StreamRounds
from dagloop.dagster.tags import step_budget
from dagloop.dagster.termination import Termination
from dagloop.runtime.wakeup import Wakeup

#: How often the scheduling loop wakes while idle, to poll for interrupts.
INTERRUPT_POLL_SECONDS = 0.1
#: Steps started per turn of the event loop. Dagster hands out every ready step at once
#: (every mapped step when a fan-out resolves); started in one turn, every one of them
#: would reach its first wait before the loop resumes any step whose wait is over, so
#: all of them would be alive at once. Between slices the loop finishes what it can.
LAUNCH_SLICE = 64

_INTERRUPTS = (KeyboardInterrupt, DagsterExecutionInterruptedError)
_OVER = (AttemptState.CLOSED, AttemptState.ABANDONED)


class Orchestrator:
    def __init__(
        self,
        job_context: PlanExecutionContext,
        execution_plan: ExecutionPlan,
        config: AsyncExecutorConfig,
        attempts: AttemptTable[StepRun],
        remote: RemoteSteps | None = None,
        event_log: RunEventLog | None = None,
    ) -> None:
        self._job_context = job_context
        self._plan = execution_plan
        self._config = config
        self._loop: asyncio.AbstractEventLoop = job_context.event_loop
        self._emit: Callable[[DagsterEvent], None] = lambda event: None
        self._active: ActiveExecution | None = None
        self._wakeup = Wakeup(self._loop)
        self._event_log = event_log
        #: Every attempt of the run: the one authority on what each may report (the
        #: event log asks it too, before storing).
        self._attempts = attempts
        #: Paces the rounds that streamed outputs ask for.
        self._stream_rounds = StreamRounds(self._loop, self._wakeup.set)
        self._reports = StepReports(
            job_context,
            self._attempts,
            self._stream_rounds,
            lambda run, reason: self._termination.interrupt(run, reason),
            config.blocked_loop_warning_seconds,
        )
        self._termination = Termination(
            job_context,
            config,
            self._attempts,
            self._reports.report_owed,
            self._released,
            self._wakeup.set,
            event_log,
        )
        self._termination.on_signal = self._end_run_log_capture
        self._hosting = StepHosting(
            self._loop,
            sync_threads=config.sync_threads,
            host_threads=config.max_concurrent,
            thread_left=event_log.quarantined.release if event_log is not None else None,
        )
        self._remote = remote
        #: Every step task ever started, so none can outlive the orchestrator.
        self._tasks: set[asyncio.Task[None]] = set()
        self._concurrency: InstanceConcurrencyContext | None = None
        #: Resolves mapped steps of each handled DynamicOutput (None: nothing streams).
        self._streaming: StreamedFanOut | None = None
        #: The run's stdout/stderr capture; ended early when a signal arrives.
        self._run_capture: RunLogCapture | None = None
        #: The known state shared by the steps started in the current scheduling round.
        self._round_known_state: KnownExecutionState | None = None
        #: Steps handed out by `ActiveExecution` that `RemoteSteps.place` put off: offered
        #: again in the next scheduling round.
        self._put_off: list[ExecutionStep] = []
        if remote is not None:
            remote.wake_when_placeable(self._wakeup.set)

    @property
    def duplicate_terminal_events(self) -> int:
        """Second terminal events of attempts dropped before they reached Dagster's
        bookkeeping (storage drops its own, `AttemptTable.admit`)."""
        return self._attempts.dropped_accepted

    # -- entry points ------------------------------------------------------------------

    def request_interrupt(self, why: str) -> None:
        """Ask the run to stop: in-flight steps are interrupted, nothing new starts."""
        self._termination.request(why)

    def fail_run(self, error: BaseException) -> None:
        """Stop the run and end it with `error` (e.g. its event log cannot be written)."""
        self._termination.fail_run(error)

    async def run(self, emit: Callable[[DagsterEvent], None]) -> None:
        self._emit = emit
        self._termination.start(emit)
        bridge = LoopBridge(self._loop)
        bridge.install()
        try:
            with ExitStack() as stack:
                job_context = self._job_context
                concurrency = stack.enter_context(
                    InstanceConcurrencyContext(job_context.instance, job_context.dagster_run)
                )
                self._concurrency = concurrency
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
                dependency_config = self._config.step_dependency_config
                self._streaming = StreamedFanOut.for_run(
                    self._plan,
                    active,
                    every_producer=not dependency_config.require_upstream_step_success,
                )
                self._reports.start(emit, active, self._streaming)
                self._start_run_log_capture(stack)
                async with self._termination.watching_for_canceling():
                    await self._schedule(active)
                self._termination.report_summary()
                if self._streaming is not None:
                    self._emit_all(self._streaming.summary(job_context))
                termination = self._termination
                if termination.raised is not None:
                    raise termination.raised
                if termination.stopping:
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
            # Last resort (a failure while winding down): no step task may outlive us.
            await self._reap_tasks()
            self._stream_rounds.close()
            bridge.uninstall()
            self._hosting.shutdown()

    # -- scheduling loop ---------------------------------------------------------------

    async def _schedule(self, active: ActiveExecution) -> None:
        """Run the plan. Whatever raises here (a bug, a storage error, the orchestrator's
        own cancellation), every step in flight is interrupted and awaited first, so
        each one that started ends with exactly one terminal event."""
        try:
            await self._schedule_steps(active)
        except BaseException as exc:
            termination = self._termination
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit):
                termination.raised = termination.raised or exc
            await self._wind_down(active, f"the orchestrator raised {type(exc).__name__}")
            raise

    async def _schedule_steps(self, active: ActiveExecution) -> None:
        job_context = self._job_context
        termination = self._termination
        while True:
            termination.poll()
            if termination.requested is not None and not termination.stopping:
                await self._remote_before_stopping()
                termination.begin_stopping(active, termination.requested)

            if not termination.stopping:
                streaming = self._streaming
                if streaming is not None and streaming.has_handled and self._stream_rounds.take():
                    streaming.resolve_handled()
                put_off, self._put_off = self._put_off, []
                await self._launch(put_off, active, same_place=True)
                await self._launch(active.get_steps_to_execute(), active)
                self._round_known_state = None
                self._emit_all(active.concurrency_event_iterator(job_context))
            else:
                self._drop_put_off()
            self._emit_all(active.plan_events_iterator(job_context))

            if not len(self._attempts) and (termination.stopping or active.is_complete):
                return
            await self._wakeup.wait(self._idle_timeout(active))

    async def _launch(
        self, steps: Sequence[ExecutionStep], active: ActiveExecution, *, same_place: bool = False
    ) -> None:
        """Start `steps` where `RemoteSteps.place` says, or put them off. `same_place`:
        the steps were put off for the same reason, so once one is put off again, so are
        the rest, without asking (a fan-out's steps wait for a place together, and a
        round begins at every step's end)."""
        for index, step in enumerate(steps):
            if index and index % LAUNCH_SLICE == 0:
                await asyncio.sleep(0)
                self._termination.poll()
            if self._termination.requested is not None:
                # Handed out but never started: the run is interrupted. Their pool
                # slots are freed as the run stops (`_drop_put_off`).
                self._put_off.extend(steps[index:])
                break
            where = Where.LOOP if self._remote is None else self._remote.place(step)
            if where is Where.LATER:
                if same_place:
                    self._put_off.extend(steps[index:])
                    return
                self._put_off.append(step)
                continue
            if self._round_known_state is None:
                if self._event_log is not None:
                    # What these steps depend on is stored before they start: a crash
                    # from here on never loses a success that a later step relied on.
                    await self._event_log.barrier()
                    if self._termination.requested is not None:
                        if self._remote is not None and where is Where.LOOP:
                            self._remote.local_attempt_ended(step)  # placed, never run
                        self._put_off.extend(steps[index:])
                        break
                # One known state for the steps started together (nothing changes it
                # between them): building it checks every ready output, so one per
                # step would make a fan-out of N steps cost O(N^2).
                self._round_known_state = active.get_known_state()
            self._start(step, active, where is Where.REMOTE)

    def _drop_put_off(self) -> None:
        """The run stops: steps put off until a place frees up never start (no event),
        and the pool slots they hold are freed."""
        put_off, self._put_off = self._put_off, []
        for step in put_off:
            self._free_pool_slot(step.key)

    async def _wind_down(self, active: ActiveExecution, why: str) -> None:
        self._drop_put_off()
        with contextlib.suppress(Exception):
            if not self._termination.stopping:
                await self._remote_before_stopping()
                self._termination.begin_stopping(active, why)
        while len(self._attempts):
            try:
                await self._wakeup.wait(INTERRUPT_POLL_SECONDS)
            except asyncio.CancelledError:
                continue  # cancelled again while winding down: keep waiting for the steps

    async def _remote_before_stopping(self) -> None:
        if self._remote is not None:
            await self._remote.before_stopping()

    async def _reap_tasks(self) -> None:
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _idle_timeout(self, active: ActiveExecution) -> float:
        timeout = INTERRUPT_POLL_SECONDS
        if not self._termination.stopping:
            until_ready: float = active.sleep_interval()
            if until_ready > 0:
                timeout = min(timeout, until_ready)
        return timeout

    # -- steps -------------------------------------------------------------------------

    def _start(self, step: ExecutionStep, active: ActiveExecution, remote: bool) -> None:
        known_state = self._round_known_state
        if known_state is None:
            known_state = active.get_known_state()
        context = self._job_context.for_step(step, known_state)
        # A remote step is awaited by its task, which is cancelled like a greenlet's.
        host = "greenlet" if remote else choose_host(context, self._config.step_host)
        budget = step_budget(step.node_handle.name, step.key, step.tags)
        if budget is None:
            budget = self._config.step_timeout_seconds
        run = StepRun(
            step=step,
            context=context,
            host=host,
            # A remote step's budget is kept where it runs, from its STEP_START there.
            budget=None if remote else budget,
            report_hold=self._reports.report_hold,
            attempts=self._attempts,
            remote=remote,
        )
        task = self._loop.create_task(
            self._execute(run, known_state if remote else None), name=f"dagloop-step:{step.key}"
        )
        run.task = task
        self._tasks.add(task)
        task.add_done_callback(lambda task: self._task_done(run, task))

    def _task_done(self, run: StepRun, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if run.state in _OVER:
            return
        # Cancelled before its coroutine ever ran (so `_execute` could not end it).
        if run.state is AttemptState.WITHDRAWN:
            self._unstart(run)
        else:
            self._reports.settle(run, run.cancel_reason or DagsterExecutionInterruptedError())
        self.release(run)

    async def _execute(self, run: StepRun, remote_state: KnownExecutionState | None) -> None:
        def accept(event: DagsterEvent) -> None:
            self._reports.accept(run, event)

        try:
            if remote_state is not None:
                assert self._remote is not None
                await self._remote.execute(
                    RemoteAttempt(
                        run, remote_state, accept, lambda error: self._reports.settle(run, error)
                    )
                )
            else:
                await self._hosting.run_step(run, accept)
            # Before hooks, as in-process: a retried step may start its next attempt
            # while this attempt's hooks still run.
            self._reports.code_ended(run)
            if remote_state is None and self._hosting.has_hooks(run):
                await self._hosting.run_hooks(run, accept)
        except _INTERRUPTS as exc:
            self._reports.settle(run, exc)
            # Dagster re-raises interrupts after reporting the step failed. One we did
            # not cause (user code raising KeyboardInterrupt), or a signal's interrupt
            # that no RetryPolicy absorbed, stops the run, as in the in-process executor.
            if not self._termination.stopping:
                self._termination.raised = self._termination.raised or exc
                self.request_interrupt(f"step '{run.key}' raised {type(exc).__name__}")
        except asyncio.CancelledError:
            if run.state is AttemptState.ABANDONED:
                return  # given up on; its failure is reported
            if run.state is AttemptState.WITHDRAWN:
                self._unstart(run)
                self.release(run)
                return  # withdrawn before it began: nothing to report
            self._reports.settle(run, run.cancel_reason or DagsterExecutionInterruptedError())
            raise  # the orchestrator itself is being torn down
        except BaseException as exc:
            self._reports.settle(run, exc)
            if self._fails_its_step_only(run, exc):
                return
            self._termination.raised = self._termination.raised or exc
            self.request_interrupt(f"step '{run.key}' raised {type(exc).__name__}")
        finally:
            self.release(run)

    def _fails_its_step_only(self, run: StepRun, exc: BaseException) -> bool:
        """A step's time budget ran out: that fails (or retries) the step and never the
        run, even if the timeout surfaced outside Dagster's own handler. Only with
        `raise_on_error` does it stop the run, as any step error does there."""
        return (
            isinstance(exc, StepTimeoutError)
            and isinstance(run.cancel_reason, StepTimeoutError)
            and not self._job_context.raise_on_error
        )

    def _unstart(self, run: StepRun) -> None:
        """A step handed out by Dagster's `ActiveExecution` but withdrawn before its code
        began: no event at all. Its pool slot (if it claimed one) is freed; it stays in
        flight in `ActiveExecution`, which only happens while the run is stopping, and
        the run then ends interrupted."""
        self._free_pool_slot(run.key)

    def _free_pool_slot(self, step_key: str) -> None:
        if self._concurrency is not None:
            with contextlib.suppress(Exception):
                self._concurrency.free_step(step_key)

    def release(self, run: StepRun) -> None:
        """The attempt's task is over: release what it held, the first time (an
        abandoned attempt was released as it was abandoned)."""
        if self._attempts.close(run.attempt):
            self._released(run)

    def _released(self, run: StepRun) -> None:
        """What an attempt held is released: once, as its task ends (`release`) or as
        it is abandoned (`Termination`)."""
        self._wakeup.set()
        if run.deadline_timer is not None:
            run.deadline_timer.cancel()
        self._termination.count_interrupt(run)
        if self._remote is not None and not run.remote:
            self._remote.local_attempt_ended(run.step)

    # -- plumbing ----------------------------------------------------------------------

    def _emit_all(self, events: Iterable[DagsterEvent]) -> None:
        for event in events:
            self._emit(event)

    def _end_run_log_capture(self) -> None:
        """A signal arrived: the run's output goes to the real console again (see
        `RunLogCapture.end`)."""
        if self._run_capture is not None:
            self._run_capture.end()

    def _start_run_log_capture(self, stack: ExitStack) -> None:
        """Capture the run's stdout/stderr once for the process, as the in-process
        executor does."""
        job_context = self._job_context
        # Per-step capture (dagster/compute_logs/): before the run's capture takes the fds.
        step_logs = stack.enter_context(open_for_run(job_context, self._config.compute_logs))
        self._hosting.step_logs = step_logs
        steps = self._plan.get_steps_to_execute_in_topo_order()
        self._run_capture = stack.enter_context(
            RunLogCapture(job_context, steps, step_logs, self._emit)
        )
