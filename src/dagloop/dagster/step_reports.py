"""A step attempt's events on their way to Dagster: the caller and `ActiveExecution`.

Every event an attempt reports passes the run's `AttemptTable` (attempts.py), which says
whether it goes on; what the table says an attempt is owed (a failure reported on its
behalf, or its state marked unknown) is reported here too. Storage is the other path an
event takes: the event log writes it in the thread that logged it (event_log.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import Callable
from types import TracebackType

import dagster as dg

from dagloop.dagster._internals import (
    ActiveExecution,
    DagsterEvent,
    EngineEventData,
    PlanExecutionContext,
    step_failure_for_interrupt,
    warning_engine_event,
)
from dagloop.dagster.attempts import AttemptTable, Settlement, Verdict
from dagloop.dagster.errors import EventLogWriteError, StepTimeoutError
from dagloop.dagster.step_hosting import blocked_loop_warning
from dagloop.dagster.step_run import StepRun
from dagloop.dagster.streaming import StreamedFanOut, StreamRounds


class StepReports:
    """Passes each attempt's events on to the caller (`emit`) and to Dagster's
    `ActiveExecution`, on the loop thread."""

    def __init__(
        self,
        job_context: PlanExecutionContext,
        attempts: AttemptTable[StepRun],
        stream_rounds: StreamRounds,
        interrupt: Callable[[StepRun, BaseException], None],
        blocked_loop_warning_seconds: float,
    ) -> None:
        self._job_context = job_context
        self._loop: asyncio.AbstractEventLoop = job_context.event_loop
        self._attempts = attempts
        self._stream_rounds = stream_rounds
        self._interrupt = interrupt
        self._blocked_loop_warning_seconds = blocked_loop_warning_seconds
        self._emit: Callable[[DagsterEvent], None] = lambda event: None
        self._active: ActiveExecution | None = None
        self._streaming: StreamedFanOut | None = None
        attempts.set_drop_report(self._duplicate_stored)

    def start(
        self,
        emit: Callable[[DagsterEvent], None],
        active: ActiveExecution,
        streaming: StreamedFanOut | None,
    ) -> None:
        self._emit = emit
        self._active = active
        self._streaming = streaming

    def accept(self, run: StepRun, event: DagsterEvent) -> None:
        verdict = self._attempts.accept(run.attempt, event.event_type_value)
        if verdict is Verdict.LATE:
            return
        if verdict is Verdict.DUPLICATE:
            self._warn_duplicate(run.key, event.event_type_value, "was not passed on")
            return
        if verdict is Verdict.OPENS:
            self._start_budget(run)
        self._emit(event)
        if event.is_hook_event:  # as in-process: hook events are reported, not tracked
            return
        assert self._active is not None
        streaming = self._streaming
        if streaming is not None:
            streaming.before_event(event)
        self._active.handle_event(event)
        # A DynamicOutput was handled: its mapped steps are resolved at the next
        # streaming round. When that is due, a producer on the loop lets the scheduler
        # run now, not when its own code next awaits (an async generator may never).
        streamed = streaming is not None and streaming.on_event(event)
        if streamed and self._stream_rounds.output_ready():
            run.yield_to_loop = not run.in_thread and not run.remote

    def settle(self, run: StepRun, error: BaseException) -> None:
        """An attempt stopped without (perhaps) reporting its end: report what is owed."""
        self.report_owed(run, self._attempts.settle(run.attempt), error)

    def report_owed(self, run: StepRun, owed: Settlement, error: BaseException) -> None:
        """Report a failure on an attempt's behalf, or mark its state unknown."""
        if owed is Settlement.NOTHING:
            return
        assert self._active is not None
        if owed is Settlement.REPORT_FAILURE:
            try:
                event = step_failure_for_interrupt(run.context, _exc_info(error))
            except EventLogWriteError:
                # The failure could not even be logged: the run fails with the storage
                # error (reported by the event log); Dagster marks the step's state unknown.
                pass
            else:
                self._emit(event)
                self._active.handle_event(event)
                return
        # Its own terminal event is stored and on its way to `accept`, which drops it
        # now: Dagster's bookkeeping is told the step's state is unknown instead.
        self._active.verify_complete(self._job_context, run.key)

    def code_ended(self, run: StepRun) -> None:
        """Once per attempt: a step that ended without a terminal event is abandoned in
        Dagster's bookkeeping (`verify_complete` marks its state unknown). Only an
        attempt that reported none is checked: once it reported STEP_UP_FOR_RETRY, its
        next attempt may already be in flight under the same key."""
        if self._attempts.code_ended(run.attempt):
            assert self._active is not None
            self._active.verify_complete(self._job_context, run.key)

    def report_hold(self, run: StepRun, held: float) -> None:
        """A step held the loop `held` seconds (called on the loop thread only)."""
        warning = blocked_loop_warning(run, held, self._blocked_loop_warning_seconds)
        if warning is not None:
            self._emit(warning)

    def _start_budget(self, run: StepRun) -> None:
        """A step's time budget counts from its STEP_START, once it has a thread: not
        while it waits for one."""
        if run.budget is not None and run.deadline_timer is None:
            run.deadline_timer = self._loop.call_later(run.budget, self._expire, run)

    def _expire(self, run: StepRun) -> None:
        budget = run.budget
        assert budget is not None
        self._interrupt(run, StepTimeoutError(run.op_name, run.key, budget))

    def _duplicate_stored(self, step_key: str, event_type: str) -> None:
        """Storage dropped a second terminal event (called in the thread that stored)."""
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
