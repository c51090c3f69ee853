"""The coroutine that runs a Dagster execution plan on the run's event loop.

Readiness, retries, skips, dynamic mappings, `max_concurrent`, tag concurrency limits
and instance pools are all decided by Dagster's own `ActiveExecution`; this module
only starts what it hands out, as soon as it hands it out, and reports back.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from contextlib import ExitStack
from types import FrameType, TracebackType
from typing import Protocol

import dagster as dg

from dagloop.dagster._internals import (
    ActiveExecution,
    DagsterEvent,
    DagsterEventType,
    DagsterExecutionInterruptedError,
    EngineEventData,
    ExecutionPlan,
    ExecutionStep,
    InstanceConcurrencyContext,
    KnownExecutionState,
    PlanExecutionContext,
    pop_captured_interrupt,
    step_failure_for_interrupt,
    warning_engine_event,
)
from dagloop.dagster.compute_logs import RunLogCapture, open_for_run
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.errors import EventLogWriteError, StepTimeoutError
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.step_hosting import StepHosting, blocked_loop_warning
from dagloop.dagster.step_run import LoopBridge, StepRun, choose_host
from dagloop.dagster.streaming import StreamedFanOut, StreamRounds
from dagloop.dagster.tags import step_budget
from dagloop.dagster.terminal_events import TerminalLedger, is_terminal
from dagloop.runtime.thread_interrupt import exception_class

#: How often the orchestrator looks for a captured SIGINT/SIGTERM while idle.
INTERRUPT_POLL_SECONDS = 0.1
#: How often it checks whether the run was marked CANCELING in the instance.
CANCEL_POLL_SECONDS = 0.5
#: Steps started per turn of the event loop. Dagster hands out every ready step at once
#: (10,000 mapped steps when a fan-out resolves); started in one turn, every one of them
#: would reach its first wait before the loop resumes any step whose wait is over, so
#: all of them are alive at once. Between slices the loop finishes what it can.
LAUNCH_SLICE = 64

_INTERRUPTS = (KeyboardInterrupt, DagsterExecutionInterruptedError)
_ATTEMPT_OPENINGS = frozenset(
    {DagsterEventType.STEP_START.value, DagsterEventType.STEP_RESTARTED.value}
)


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
        event_log: RunEventLog | None = None,
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
        self._event_log = event_log
        self._hosting = StepHosting(
            self._loop,
            sync_threads=config.sync_threads,
            host_threads=config.max_concurrent,
            thread_left=event_log.release_thread if event_log is not None else None,
        )
        self._last_cancel_poll = 0.0
        self._cancel_poll_failures = 0
        self._remote = remote
        self._remote_runs: dict[StepRun, KnownExecutionState] = {}
        #: Every step task ever started, so none can outlive the orchestrator.
        self._tasks: set[asyncio.Task[None]] = set()
        self._concurrency: InstanceConcurrencyContext | None = None
        #: Resolves mapped steps of each handled DynamicOutput (None: nothing streams).
        self._streaming: StreamedFanOut | None = None
        #: How interrupts of steps running synchronous code ended (the run's summary).
        self._thread_interrupts: Counter[str] = Counter()
        #: The run's stdout/stderr capture; ended early when a signal arrives.
        self._run_capture: RunLogCapture | None = None
        #: Terminal events of step attempts that already ended, dropped before they
        #: reached Dagster's bookkeeping (the event log drops its own, see
        #: terminal_events.py); both are reported as warnings.
        self.duplicate_terminal_events = 0
        self._ledger = event_log.terminal_events if event_log is not None else TerminalLedger()
        self._ledger.set_drop_report(self._duplicate_stored)
        #: The known state shared by the steps started in the current scheduling round.
        self._round_known_state: KnownExecutionState | None = None
        #: Paces the rounds that streamed outputs ask for.
        self._stream_rounds = StreamRounds(self._loop, self._wakeup.set)

    # -- entry points ------------------------------------------------------------------

    def request_interrupt(self, why: str) -> None:
        """Ask the run to stop: in-flight steps are interrupted, nothing new starts."""
        if self._interrupt_requested is None:
            self._interrupt_requested = why
        self._wakeup.set()

    def fail_run(self, error: BaseException) -> None:
        """Stop the run and end it with `error` (e.g. its event log cannot be written)."""
        if self._raised is None:
            self._raised = error
        self.request_interrupt(f"{type(error).__name__}: {error}")

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
                self._start_run_log_capture(stack)
                await self._schedule(active)
                self._report_thread_interrupts()
                self._report_streaming()
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
            if not isinstance(exc, asyncio.CancelledError | GeneratorExit) and self._raised is None:
                self._raised = exc
            await self._wind_down(active, f"the orchestrator raised {type(exc).__name__}")
            raise

    async def _schedule_steps(self, active: ActiveExecution) -> None:
        job_context = self._job_context
        while True:
            self._poll_for_interrupts()
            if self._interrupt_requested is not None and not self._stopping:
                self._begin_stopping(active, self._interrupt_requested)

            if not self._stopping:
                streaming = self._streaming
                if streaming is not None and streaming.has_handled and self._stream_rounds.take():
                    streaming.resolve_handled()
                steps = active.get_steps_to_execute()
                if steps and self._event_log is not None:
                    # What these steps depend on is stored before they start: a crash
                    # from here on never loses a success that a later step relied on.
                    await self._event_log.barrier()
                # One known state for the steps handed out together (nothing changes it
                # between them): building it checks every ready output, so one per step
                # made a fan-out of N steps cost O(N^2).
                self._round_known_state = active.get_known_state() if steps else None
                await self._launch(steps, active)
                self._round_known_state = None
                self._emit_all(active.concurrency_event_iterator(job_context))
            self._emit_all(active.plan_events_iterator(job_context))

            if not self._running and (self._stopping or active.is_complete):
                return
            await self._wakeup.wait(self._idle_timeout(active))

    async def _launch(self, steps: Sequence[ExecutionStep], active: ActiveExecution) -> None:
        for index, step in enumerate(steps):
            if index and index % LAUNCH_SLICE == 0:
                await asyncio.sleep(0)
                self._poll_for_interrupts()
            if self._interrupt_requested is not None:
                break  # handed out but never started: the run is interrupted
            self._start(step, active)

    async def _wind_down(self, active: ActiveExecution, why: str) -> None:
        with contextlib.suppress(Exception):
            if not self._stopping:
                self._begin_stopping(active, why)
        while self._running:
            try:
                await self._wakeup.wait(INTERRUPT_POLL_SECONDS)
            except asyncio.CancelledError:
                continue  # cancelled again while winding down: keep waiting for the steps

    async def _reap_tasks(self) -> None:
        pending = [task for task in self._tasks if not task.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def _idle_timeout(self, active: ActiveExecution) -> float:
        timeout = INTERRUPT_POLL_SECONDS
        if not self._stopping:
            until_ready: float = active.sleep_interval()
            if until_ready > 0:
                timeout = min(timeout, until_ready)
        return timeout

    def _poll_for_interrupts(self) -> None:
        if pop_captured_interrupt():
            self._on_signal()
        now = time.monotonic()
        poll_due = now - self._last_cancel_poll >= CANCEL_POLL_SECONDS
        if self._interrupt_requested is None and poll_due:
            self._last_cancel_poll = now
            if self._run_is_canceling():
                self.request_interrupt("the run was marked CANCELING")

    def _run_is_canceling(self) -> bool:
        """One look at the run's status; a storage error is retried at the next poll."""
        try:
            run = self._job_context.instance.get_run_by_id(self._job_context.run_id)
        except Exception as exc:
            self._cancel_poll_failures += 1
            if self._cancel_poll_failures == 1:
                with contextlib.suppress(Exception):
                    self._job_context.log.warning(
                        "dagloop async executor: reading the run's status failed "
                        f"({exc!r}); retrying every {CANCEL_POLL_SECONDS:g} s"
                    )
            return False
        self._cancel_poll_failures = 0
        return run is not None and run.status == dg.DagsterRunStatus.CANCELING

    def _on_signal(self) -> None:
        """SIGINT/SIGTERM. A run marked CANCELING (the UI's Terminate) stops. Otherwise,
        as in the in-process executor, the interrupt is raised in the code that runs: a
        step whose RetryPolicy turns it into a retry carries on, and any step that
        re-raises it stops the run."""
        # A terminal's Ctrl-C also killed the process that mirrors the run's captured
        # output to the console: from here on the console is written directly.
        self._end_run_log_capture()
        if self._stopping:
            return
        if not self._running or self._run_is_canceling():
            self.request_interrupt("received a termination signal")
            return
        # Steps still waiting for a thread are not interrupted: they start later, as
        # the steps after the interrupted one do in the in-process executor.
        started = [run for run in self._running if run.started]
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                "dagloop async executor: received an interrupt - raising it in "
                f"{len(started)} running step(s)",
                EngineEventData.interrupted(sorted(run.key for run in started)),
            )
        )
        for run in started:
            self._interrupt(run, DagsterExecutionInterruptedError())

    def _begin_stopping(self, active: ActiveExecution, why: str) -> None:
        self._stopping = True
        active.mark_interrupted()
        # A step whose code has not begun (waiting for a thread) never begins: it ends
        # without an event, as a step Dagster's executors never launched.
        withdrawn = sorted(run.key for run in list(self._running) if run.withdraw())
        in_flight = sorted(run.key for run in self._running if not run.never_started)
        not_started = f"; {len(withdrawn)} not started will not run" if withdrawn else ""
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                f"dagloop async executor: {why} - cancelling {len(in_flight)} in-flight "
                f"step(s){not_started}",
                EngineEventData.interrupted(in_flight),
            )
        )
        for run in list(self._running):
            if not run.never_started:
                self._interrupt(run, DagsterExecutionInterruptedError())

    def _interrupt(self, run: StepRun, reason: BaseException) -> None:
        """Interrupt a step; one running code in a worker thread that is still running
        `termination_grace_seconds` later is abandoned."""
        if run.cancel(reason) and run.in_thread:
            self._loop.call_later(self._config.termination_grace_seconds, self._abandon, run)

    def _abandon(self, run: StepRun) -> None:
        """Give up on a thread-hosted step that did not stop: report it failed (its one
        terminal event, with the stack where its thread was stuck), and drop everything
        its thread does from now on."""
        if run.finished:
            return
        run.abandoned = True
        stuck_at = run.section.current_frame()
        if self._event_log is not None:
            run.section.while_inside(self._event_log.quarantine)
        grace = self._config.termination_grace_seconds
        where = f" It was stuck at {_describe(stuck_at)}." if stuck_at is not None else ""
        with contextlib.suppress(Exception):
            self._emit(
                warning_engine_event(
                    run.context,
                    f"Op '{run.op_name}' (step '{run.key}') was still running synchronous "
                    f"code {grace:g} s after it was interrupted: it is reported failed and "
                    f"abandoned.{where} Nothing it does from now on reaches this run, and "
                    "its thread does not keep the process alive.",
                    EngineEventData.interrupted([run.key]),
                )
            )
        reason = run.cancel_reason or DagsterExecutionInterruptedError()
        self._fail_from_orchestrator(run, _abandoned_error(reason, run, grace, stuck_at))
        self._finish(run)
        if run.task is not None:
            run.task.cancel()

    # -- steps -------------------------------------------------------------------------

    def _start(self, step: ExecutionStep, active: ActiveExecution) -> None:
        known_state = self._round_known_state
        if known_state is None:
            known_state = active.get_known_state()
        context = self._job_context.for_step(step, known_state)
        remote = self._remote is not None and self._remote.accepts(step)
        # A remote step is awaited by its task, which is cancelled like a greenlet's.
        host = "greenlet" if remote else choose_host(context, self._config.step_host)
        budget = step_budget(step.node_handle.name, step.key, step.tags)
        run = StepRun(
            step=step,
            context=context,
            host=host,
            budget=budget if budget is not None else self._config.step_timeout_seconds,
            report_hold=self._report_hold,
            remote=remote,
        )
        self._running.add(run)
        if remote:
            self._remote_runs[run] = known_state
        run.task = self._loop.create_task(self._execute(run), name=f"dagloop-step:{step.key}")
        self._tasks.add(run.task)
        run.task.add_done_callback(lambda task: self._task_done(run, task))

    def _task_done(self, run: StepRun, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not run.finished and not run.abandoned:
            # Cancelled before its coroutine ever ran (so `_execute` could not end it).
            if run.never_started:
                self._unstart(run)
            else:
                self._ensure_terminal(run, run.cancel_reason or DagsterExecutionInterruptedError())
            self._finish(run)

    async def _execute(self, run: StepRun) -> None:
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
            self._ensure_terminal(run, exc)
            # Dagster re-raises interrupts after reporting the step failed. One we did
            # not cause (user code raising KeyboardInterrupt), or a signal's interrupt
            # that no RetryPolicy absorbed, stops the run, as in the in-process executor.
            if not self._stopping:
                self._raised = self._raised or exc
                self.request_interrupt(f"step '{run.key}' raised {type(exc).__name__}")
        except asyncio.CancelledError:
            if run.abandoned:
                return  # given up on; its failure is reported
            if run.never_started:
                self._unstart(run)
                return  # withdrawn before it began: nothing to report
            self._ensure_terminal(run, run.cancel_reason or DagsterExecutionInterruptedError())
            raise  # the orchestrator itself is being torn down
        except BaseException as exc:
            self._ensure_terminal(run, exc)
            if self._fails_its_step_only(run, exc):
                return
            if self._raised is None:
                self._raised = exc
            self.request_interrupt(f"step '{run.key}' raised {type(exc).__name__}")
        finally:
            if not run.abandoned:
                self._finish(run)

    def _report_streaming(self) -> None:
        if self._streaming is None or not self._streaming.resolved_ahead:
            return
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                f"dagloop async executor: {self._streaming.resolved_ahead} mapped step(s) "
                "were resolved as their DynamicOutput was stored, before their dynamic op "
                "finished",
                EngineEventData(
                    metadata={
                        "resolved_ahead": dg.MetadataValue.int(self._streaming.resolved_ahead)
                    }
                ),
            )
        )

    def _report_thread_interrupts(self) -> None:
        counts = self._thread_interrupts
        interrupted = sum(counts[k] for k in ("sampled", "trapped", "abandoned", "unneeded"))
        if not interrupted:
            return
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                f"dagloop async executor: interrupted {interrupted} step(s) running "
                f"synchronous code: {counts['sampled']} at a sampled point of the op's code, "
                f"{counts['trapped']} at the op's next line, {counts['abandoned']} given up on "
                f"after the grace period, "
                f"{counts['unneeded']} ended before it was needed",
                EngineEventData(
                    metadata={
                        name: dg.MetadataValue.int(counts[name])
                        for name in ("sampled", "trapped", "abandoned", "unneeded", "moved")
                    }
                ),
            )
        )

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
        run.verified = True
        if self._concurrency is not None:
            with contextlib.suppress(Exception):
                self._concurrency.free_step(run.key)

    def _ensure_terminal(self, run: StepRun, error: BaseException) -> None:
        """An attempt that ends without a terminal event (interrupted outside Dagster's
        own handler, or before it started) is reported failed here, once."""
        if not run.reported_terminal and not run.abandoned:
            self._fail_from_orchestrator(run, error)

    def _finish(self, run: StepRun) -> None:
        if run.finished:
            return
        run.finished = True
        self._running.discard(run)
        self._remote_runs.pop(run, None)
        self._wakeup.set()
        if run.deadline_timer is not None:
            run.deadline_timer.cancel()
        if run.in_thread and run.cancel_reason is not None:
            section = run.section
            outcome = section.delivered_by or ("abandoned" if run.abandoned else "unneeded")
            self._thread_interrupts[outcome] += 1
            self._thread_interrupts["moved"] += section.moved_while_scheduling
        try:
            self._verify(run)
        except Exception as exc:  # e.g. the error it logs cannot be stored
            self._raised = self._raised or exc

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
        if is_terminal(event):
            if run.reported_terminal:
                self._duplicate_accepted(run, event)
                return
            run.reported_terminal = True
        elif event.event_type_value in _ATTEMPT_OPENINGS:
            self._start_budget(run)
        self._emit(event)
        if not event.is_hook_event:  # as in-process: hook events are reported, not tracked
            assert self._active is not None
            if self._streaming is not None:
                self._streaming.before_event(event)
            self._active.handle_event(event)
            # A DynamicOutput was handled: its mapped steps are resolved at the next
            # streaming round. When that is due, a producer on the loop lets the scheduler
            # run now, not when its own code next awaits (an async generator may never).
            streamed = self._streaming is not None and self._streaming.on_event(event)
            if streamed and self._stream_rounds.output_ready():
                run.yield_to_loop = not run.in_thread and not run.remote

    def _start_budget(self, run: StepRun) -> None:
        """A step's time budget counts from its STEP_START, once it has a thread: not
        while it waits for one."""
        if run.budget is not None and run.deadline_timer is None:
            run.deadline_timer = self._loop.call_later(run.budget, self._expire, run)

    def _duplicate_accepted(self, run: StepRun, event: DagsterEvent) -> None:
        self.duplicate_terminal_events += 1
        self._warn_duplicate(run.key, event.event_type_value, "was not passed on")

    def _duplicate_stored(self, step_key: str, event_type: str) -> None:
        """The event log dropped a second terminal event (called in the logging thread)."""
        with contextlib.suppress(RuntimeError):  # a closed loop: the run is over
            self._loop.call_soon_threadsafe(
                self._warn_duplicate, step_key, event_type, "was not stored"
            )

    def _warn_duplicate(self, step_key: str, event_type: str, fate: str) -> None:
        with contextlib.suppress(Exception):
            warning_engine_event(
                self._job_context,
                f"dagloop async executor: a second terminal event ({event_type}) of step "
                f"'{step_key}', whose attempt had already ended, {fate}. Each step attempt "
                "reports exactly one of STEP_SUCCESS, STEP_FAILURE or STEP_UP_FOR_RETRY.",
                EngineEventData(
                    metadata={
                        "step_key": dg.MetadataValue.text(step_key),
                        "event_type": dg.MetadataValue.text(event_type),
                    }
                ),
            )

    def _expire(self, run: StepRun) -> None:
        budget = run.budget
        assert budget is not None
        self._interrupt(run, StepTimeoutError(run.op_name, run.key, budget))

    def _report_hold(self, run: StepRun, held: float) -> None:
        # Called on the loop thread only: greenlet switches and coroutine resumes.
        warning = blocked_loop_warning(run, held, self._config.blocked_loop_warning_seconds)
        if warning is not None:
            self._emit(warning)

    def _fail_from_orchestrator(self, run: StepRun, error: BaseException) -> None:
        if run.reported_terminal:
            return
        run.reported_terminal = True
        assert self._active is not None
        if self._ledger.has_ended(run.key):
            # Its terminal event is stored and on its way to `_accept`, which now drops
            # it: Dagster's bookkeeping is told the step's state is unknown instead.
            run.verified = True
            self._active.verify_complete(self._job_context, run.key)
            return
        try:
            event = step_failure_for_interrupt(run.context, _exc_info(error))
        except EventLogWriteError:
            # The failure could not even be logged: the run fails with the storage error
            # (reported by the event log); Dagster marks the step's state unknown.
            run.verified = True
            self._active.verify_complete(self._job_context, run.key)
            return
        self._emit(event)
        self._active.handle_event(event)

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
            RunLogCapture(job_context, steps, step_logs, self._remote, self._emit)
        )


def _exc_info(
    error: BaseException,
) -> tuple[type[BaseException], BaseException, TracebackType | None]:
    """`error` as `sys.exc_info()` would give it once raised, keeping the traceback it
    already carries (an abandoned step's: where its thread was stuck)."""
    if error.__traceback__ is not None:
        return type(error), error, error.__traceback__
    try:
        raise error
    except BaseException:
        kind, value, traceback = sys.exc_info()
        assert kind is not None and value is not None
        return kind, value, traceback


def _describe(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def _abandoned_error(
    reason: BaseException, run: StepRun, grace: float, stuck_at: FrameType | None
) -> BaseException:
    """The abandoned step's failure: its interrupt (or `StepTimeoutError`), with the
    stack of the op's code where its thread was stuck as the traceback, so the failure
    points at the user's line rather than at the orchestrator."""
    error = exception_class(reason)()
    error.add_note(
        f"Op '{run.op_name}' (step '{run.key}') did not stop within {grace:g} s of being "
        "interrupted and was abandoned; the traceback shows where its thread was."
    )
    if stuck_at is None:
        return error
    frames: list[FrameType] = []
    frame: FrameType | None = stuck_at
    entry = {id(code) for code in run.section.entry_code}
    while frame is not None:
        frames.append(frame)
        if id(frame.f_code) in entry:
            break  # the op's own function: what is above it is Dagster's machinery
        frame = frame.f_back
    traceback: TracebackType | None = None
    for frame in frames:  # innermost first: each links to the one it called
        traceback = TracebackType(traceback, frame, frame.f_lasti, frame.f_lineno)
    return error.with_traceback(traceback)
