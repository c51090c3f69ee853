"""Where a step's Dagster code runs: in a greenlet on the loop, or in a worker thread.

Shared by the run's orchestrator and by the step sessions of Dask workers, so a step is
hosted the same way wherever it runs.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Generator

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    dagster_event_sequence_for_step,
    trigger_hooks,
    warning_engine_event,
)
from dagloop.dagster.attempts import OPENING_EVENT_TYPES
from dagloop.dagster.compute_logs import StepLogs, step_capture
from dagloop.dagster.step_run import StepRun
from dagloop.runtime.greenbridge import await_, run_in_greenlet
from dagloop.runtime.threads import WorkerThreads

#: Upper bound of threads hosting async steps' bookkeeping (step_host="thread", or a
#: step with a user IO manager) when no tighter limit is given.
MAX_HOSTED_STEP_THREADS = 4096

Accept = Callable[[DagsterEvent], None]


class StepHosting:
    """Runs steps' event sequences and hooks for one event loop.

    `accept` is always called on the loop thread, in the order the step produced its
    events, whichever host ran the step.
    """

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        *,
        sync_threads: int,
        host_threads: int | None,
        thread_left: Callable[[int], None] | None = None,
    ) -> None:
        self._loop = loop
        #: Told the id of a worker thread whose step code has returned (or was cut off).
        self._thread_left = thread_left or (lambda thread_id: None)
        self._sync = WorkerThreads(sync_threads, name="dagloop-sync")
        # A thread-hosted async step holds its thread while its coroutine awaits on the
        # loop, so those get one thread per step in flight, not the sync pool.
        self._hosts = WorkerThreads(host_threads or MAX_HOSTED_STEP_THREADS, name="dagloop-host")

    #: Per-step stdout/stderr capture of the run (set by the orchestrator); None: none.
    step_logs: StepLogs | None = None

    async def run_step(self, run: StepRun, accept: Accept) -> None:
        # Its stdout/stderr go to its own capture (dagster/compute_logs/) while it runs.
        async with step_capture(self.step_logs, run.context, accept):
            await self._run_step(run, accept)

    async def _run_step(self, run: StepRun, accept: Accept) -> None:
        """Run the step to its end. Dagster reports the step's own errors as events; an
        interrupt (the step was cancelled) is re-raised after its failure was reported."""
        if run.in_thread:
            pool = self._sync if run.host is None else self._hosts
            await pool.run(self._thread_step_body, run, self._threadsafe(accept))
        else:
            await run_in_greenlet(
                _greenlet_step_body, run, accept, hooks=run, on_cancel=run.cancellation
            )

    def has_hooks(self, run: StepRun) -> bool:
        context = run.context
        return bool(context.job_def.get_all_hooks_for_handle(context.node_handle))

    async def run_hooks(self, run: StepRun, accept: Accept) -> None:
        # Hooks are synchronous user code (a notification, an HTTP call): they run off
        # the loop whatever hosts the step.
        await self._sync.run(_hooks_body, run, self._threadsafe(accept))

    def shutdown(self) -> None:
        self._sync.shutdown(wait=False)
        self._hosts.shutdown(wait=False)

    def _thread_step_body(self, run: StepRun, deliver: Accept) -> None:
        """`_step_body` in a worker thread, inside the section the orchestrator may
        interrupt (termination, time budget)."""
        if not run.begin():
            return  # withdrawn while it waited for a thread: it never starts
        run.section.enter()
        try:
            if run.cancel_reason is not None:  # cancelled while it waited for a thread
                raise run.cancel_reason
            _step_body(run, deliver)
        finally:
            run.section.leave()
            self._thread_left(threading.get_ident())

    def _threadsafe(self, accept: Accept) -> Accept:
        call_soon = self._loop.call_soon_threadsafe

        def deliver(event: DagsterEvent) -> None:
            call_soon(accept, event)

        return deliver


def _greenlet_step_body(run: StepRun, deliver: Accept) -> None:
    if run.begin():  # else withdrawn before its greenlet first ran: it never starts
        _step_body(run, deliver)


def _step_body(run: StepRun, deliver: Accept) -> None:
    """Run one step's events to its end; called in its greenlet or worker thread.

    Dagster's step generator reports every exception raised inside it as the step's
    failure, exactly once. An exception raised here, between two of its events (an
    interrupt that landed in the hand-off), is thrown into it at the event it just
    yielded, so that Dagster reports it the same way. Never leaving the generator
    suspended also means it is never closed by the garbage collector, where Dagster
    would report a second failure (`GeneratorExit`) that it cannot even yield.

    In a greenlet, an event that made other steps ready (a streamed DynamicOutput) is
    followed by one trip through the loop, so that they start even while the step's own
    code never awaits; a cancellation arriving there is thrown in like any other."""
    run.bind()
    events: Generator[DagsterEvent, None, None] = dagster_event_sequence_for_step(run.context)  # type: ignore[assignment]
    thrown: BaseException | None = None
    while True:
        try:
            event = next(events) if thrown is None else events.throw(thrown)
        except StopIteration:
            return
        thrown = None
        try:
            run.events.append(event)
            deliver(event)
            if run.on_opening is not None and event.event_type_value in OPENING_EVENT_TYPES:
                run.on_opening()
            if run.yield_to_loop:
                run.yield_to_loop = False
                await_(asyncio.sleep(0))
        except BaseException as exc:
            thrown = exc


def _hooks_body(run: StepRun, deliver: Accept) -> None:
    for event in trigger_hooks(run.context, run.events):
        deliver(event)


def blocked_loop_warning(run: StepRun, held: float, threshold: float) -> DagsterEvent | None:
    """The engine event (logged to the run) for a step that held the loop `held` seconds
    without awaiting, or None when that is under `threshold`."""
    if held < threshold:
        return None
    return warning_engine_event(
        run.context,
        f"Op '{run.op_name}' (step '{run.key}') blocked the event loop for {held:.2f} s "
        f"without awaiting (threshold {threshold:g} s): every other step on that loop waited. Move "
        "blocking calls out of `async def` ops (use a sync op, or "
        "`await anyio.to_thread.run_sync(...)`).",
        EngineEventData(metadata={"held_seconds": dg.MetadataValue.float(held)}),
    )
