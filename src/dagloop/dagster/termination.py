"""How a run stops: signals, the UI's Terminate, step budgets, and abandonment.

`Termination` decides when the run stops and which attempts are interrupted with what;
the run's `AttemptTable` decides what each interrupted attempt may still report.

* SIGINT/SIGTERM, as in Dagster's in-process executor: the interrupt is raised in the
  steps that run (a RetryPolicy may absorb it), unless the run was marked CANCELING.
* CANCELING (the UI's Terminate, `dagster run terminate`), a failed event log, a step
  that re-raised an interrupt: the run stops. Attempts that have not begun are
  withdrawn and report nothing; the others are interrupted.
* A thread-hosted attempt still running `termination_grace_seconds` after its interrupt
  is abandoned: reported failed with the stack where its thread was, and nothing it
  does afterwards reaches the run.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Callable
from types import FrameType, TracebackType

import dagster as dg

from dagloop.dagster._internals import (
    ActiveExecution,
    DagsterEvent,
    DagsterExecutionInterruptedError,
    EngineEventData,
    PlanExecutionContext,
    pop_captured_interrupt,
    warning_engine_event,
)
from dagloop.dagster.attempts import AttemptState, AttemptTable, Settlement
from dagloop.dagster.canceling_watch import CancelingWatch
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.step_run import StepRun
from dagloop.runtime.thread_interrupt import exception_class

#: How a thread-hosted step's interrupt ended, as counted in the run's summary.
_OUTCOMES = ("sampled", "trapped", "abandoned", "unneeded")


#: Reports what an attempt is owed (step_reports.py).
ReportOwed = Callable[[StepRun, Settlement, BaseException], None]


class Termination:
    def __init__(
        self,
        job_context: PlanExecutionContext,
        config: AsyncExecutorConfig,
        attempts: AttemptTable[StepRun],
        report_owed: ReportOwed,
        release: Callable[[StepRun], None],
        wake: Callable[[], None],
        event_log: RunEventLog | None,
    ) -> None:
        self._job_context = job_context
        self._config = config
        self._attempts = attempts
        self._report_owed = report_owed
        self._release = release
        self._wake = wake
        self._event_log = event_log
        self._emit: Callable[[DagsterEvent], None] = lambda event: None
        #: Called when a signal arrives (the run's console capture ends there).
        self.on_signal: Callable[[], None] = lambda: None
        #: Why the run was asked to stop (None: it was not).
        self.requested: str | None = None
        #: The run stops: nothing new starts, every attempt in flight is interrupted.
        self.stopping = False
        #: What the run ends with, if it must fail (the first error wins).
        self.raised: BaseException | None = None
        #: Reads the run's status; a signal asks it once more, at once.
        self._canceling = CancelingWatch(job_context)
        self._thread_interrupts: Counter[str] = Counter()

    def start(self, emit: Callable[[DagsterEvent], None]) -> None:
        self._emit = emit

    def watching_for_canceling(self) -> contextlib.AbstractAsyncContextManager[None]:
        """While the block runs: once the run is marked CANCELING, it stops."""
        return self._canceling.watching(lambda: self.request("the run was marked CANCELING"))

    # -- requests --------------------------------------------------------------------

    def request(self, why: str) -> None:
        """Ask the run to stop: in-flight steps are interrupted, nothing new starts."""
        if self.requested is None:
            self.requested = why
        self._wake()

    def fail_run(self, error: BaseException) -> None:
        """Stop the run and end it with `error` (e.g. its event log cannot be written)."""
        if self.raised is None:
            self.raised = error
        self.request(f"{type(error).__name__}: {error}")

    def poll(self) -> None:
        """Look for a captured signal (the run's status is read by `CancelingWatch`)."""
        if pop_captured_interrupt():
            self._on_signal()

    def _on_signal(self) -> None:
        """SIGINT/SIGTERM. A run marked CANCELING (the UI's Terminate) stops. Otherwise,
        as in the in-process executor, the interrupt is raised in the code that runs: a
        step whose RetryPolicy turns it into a retry carries on, and any step that
        re-raises it stops the run."""
        self.on_signal()
        if self.stopping:
            return
        if not len(self._attempts) or self._canceling.is_canceling():
            self.request("received a termination signal")
            return
        # Steps still waiting for a thread are not interrupted: they start later, as
        # the steps after the interrupted one do in the in-process executor.
        begun = self._attempts.begun()
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                "dagloop async executor: received an interrupt - raising it in "
                f"{len(begun)} running step(s)",
                EngineEventData.interrupted(sorted(run.key for run in begun)),
            )
        )
        for run in begun:
            self.interrupt(run, DagsterExecutionInterruptedError())

    # -- stopping --------------------------------------------------------------------

    def begin_stopping(self, active: ActiveExecution, why: str) -> None:
        """Stop the run: tell Dagster, withdraw what has not begun, interrupt the rest."""
        self.stopping = True
        active.mark_interrupted()
        runs = list(self._attempts)
        withdrawn = sorted(run.key for run in runs if run.withdraw())
        in_flight = [run for run in runs if run.state is not AttemptState.WITHDRAWN]
        not_started = f"; {len(withdrawn)} not started will not run" if withdrawn else ""
        self._emit(
            DagsterEvent.engine_event(
                self._job_context,
                f"dagloop async executor: {why} - cancelling {len(in_flight)} "
                f"in-flight step(s){not_started}",
                EngineEventData.interrupted(sorted(run.key for run in in_flight)),
            )
        )
        for run in in_flight:
            self.interrupt(run, DagsterExecutionInterruptedError())

    def interrupt(self, run: StepRun, reason: BaseException) -> None:
        """Interrupt an attempt; one running code in a worker thread that is still
        running `termination_grace_seconds` later is abandoned."""
        if run.cancel(reason) and run.in_thread:
            loop = self._job_context.event_loop
            loop.call_later(self._config.termination_grace_seconds, self._abandon, run)

    def _abandon(self, run: StepRun) -> None:
        """Give up on a thread-hosted attempt that did not stop: report it failed (its
        one terminal event, with the stack where its thread was stuck), and drop
        everything its thread does from now on."""
        if run.state in (AttemptState.CLOSED, AttemptState.ABANDONED):
            return
        stuck_at = run.section.current_frame()
        if self._event_log is not None:
            run.section.while_inside(self._event_log.quarantined.add)
        owed = self._attempts.abandon(run.attempt)
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
        self._report_owed(run, owed, abandoned_error(reason, run, grace, stuck_at))
        self._release(run)
        if run.task is not None:
            run.task.cancel()

    # -- the run's summary -----------------------------------------------------------

    def count_interrupt(self, run: StepRun) -> None:
        """How the interrupt of a thread-hosted attempt ended (when it is released)."""
        if not run.in_thread or run.cancel_reason is None:
            return
        section = run.section
        abandoned = run.state is AttemptState.ABANDONED
        self._thread_interrupts[
            section.delivered_by or ("abandoned" if abandoned else "unneeded")
        ] += 1
        self._thread_interrupts["moved"] += section.moved_while_scheduling

    def report_summary(self) -> None:
        counts = self._thread_interrupts
        interrupted = sum(counts[name] for name in _OUTCOMES)
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
                        name: dg.MetadataValue.int(counts[name]) for name in (*_OUTCOMES, "moved")
                    }
                ),
            )
        )


def _describe(frame: FrameType) -> str:
    return f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}"


def abandoned_error(
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
