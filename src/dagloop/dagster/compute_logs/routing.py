"""Which step a write to sys.stdout/sys.stderr belongs to, and when its capture opens.

Each step attempt binds its own route in its context (`stream_proxy.bound`), so what its
task, greenlet or worker thread writes goes to that step's capture. The capture is opened
on the step's first write of its own (`_DeferredCapture`); Dagster's managed Python
loggers are bound to the step as well (`python_logs.bound_to_step`).
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import TextIO

from dagloop.dagster._internals import (
    CapturedLogContext,
    DagsterEvent,
    EngineEventData,
    StepExecutionContext,
    serializable_error_info_from_exc_info,
)
from dagloop.dagster.compute_logs.step_captures import StepCapture, StepLogs
from dagloop.dagster.python_logs import bound_to_step, writing_dagster_log_line
from dagloop.runtime import stream_proxy
from dagloop.runtime.stream_proxy import Route

Accept = Callable[[DagsterEvent], None]


@asynccontextmanager
async def step_capture(
    logs: StepLogs | None, context: StepExecutionContext, accept: Accept
) -> AsyncIterator[None]:
    """For the duration of the block (the step attempt, run in this task and in the
    greenlet or worker thread it starts), writes to sys.stdout/sys.stderr go to the
    step's own capture; it is closed (and uploaded) however the block ends. Records of
    Dagster's managed Python loggers logged in the block are the step's too
    (`python_logs.bound_to_step`)."""
    with bound_to_step(context):
        async with _captured(logs, context, accept):
            yield


@asynccontextmanager
async def _captured(
    logs: StepLogs | None, context: StepExecutionContext, accept: Accept
) -> AsyncIterator[None]:
    if logs is None or not logs.per_step:
        yield
        return
    deferred = _DeferredCapture(logs, context, accept, asyncio.get_running_loop())
    try:
        with stream_proxy.bound(deferred.route):
            yield
    finally:
        capture = deferred.finish()
        if capture is not None:
            try:
                if capture.blocking_close:
                    # An upload: off the loop; a cancellation here does not stop it.
                    await asyncio.shield(asyncio.to_thread(capture.close))
                else:
                    capture.close()
            except Exception:
                accept(_setup_error(context, "closing"))


class _DeferredCapture:
    """A step's capture, opened when the step first writes something of its own.

    Until then there is no file and no LOGS_CAPTURED event: Dagster's own log lines of
    the step (its console logger, written while a step's log handler emits) go where they
    go without per-step capture (the run-level capture, which the console follows), so
    the console shows them as they happen, and a copy is kept in memory. The first write
    of the step's own code opens the capture, announces it, and writes the kept lines
    into it first (not to the console again), so a step that prints gets everything, in
    order. A step that never writes anything of its own gets no capture: most steps of a
    big run print nothing, and they cost nothing here.
    """

    def __init__(
        self,
        logs: StepLogs,
        context: StepExecutionContext,
        accept: Accept,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._logs = logs
        self._context = context
        self._accept = accept
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self.capture: StepCapture | None = None
        self.route = _DeferredRoute(self._open)

    def _open(self) -> Route | None:
        context = self._context
        try:
            capture = self._logs.open_step(context)
        except Exception:
            self._deliver(_setup_error(context, "setting up"))
            return None
        if capture is None:
            return None
        self.capture = capture
        event = DagsterEvent.capture_logs(
            context, [context.step.key], capture.log_key, CapturedLogContext(capture.log_key)
        )
        self._deliver(event)
        return capture.route

    def _deliver(self, event: DagsterEvent) -> None:
        if threading.get_ident() == self._loop_thread:
            self._accept(event)
        else:  # the step's worker thread: events reach the orchestrator on its loop
            self._loop.call_soon_threadsafe(self._accept, event)

    def finish(self) -> StepCapture | None:
        """The step ended: what it held goes to the run-level streams if it never wrote
        anything of its own; returns the capture to close, if one was opened."""
        self.route.finish()
        return self.capture


class _DeferredRoute(Route):
    """The route a step's writes take (see `_DeferredCapture`)."""

    __slots__ = ("_held", "_inner", "_open", "_opening")

    def __init__(self, open_capture: Callable[[], Route | None]) -> None:
        self._lock = threading.Lock()
        #: Serialises opening (which logs an event, whose console line comes back here).
        self._opening = threading.RLock()
        #: Dropped when the step ends (it refers back to the capture: no cycle left).
        self._open: Callable[[], Route | None] | None = open_capture
        self._inner: Route | None = None
        self._held: list[tuple[int, str, TextIO]] = []
        self._dirty = False
        self.closed = False

    def write(self, which: int, text: str, fallback: TextIO, *, mirrored: bool = True) -> None:
        inner = self._inner
        if inner is None:
            if writing_dagster_log_line():
                with self._lock:
                    if self._inner is None and not self.closed:
                        # Shown now (the run-level capture), kept for the step's own.
                        fallback.write(text)
                        self._held.append((which, text, fallback))
                        return
                inner = self._inner
            else:
                inner = self._opened()
        if inner is None:
            fallback.write(text)
        else:
            inner.write(which, text, fallback, mirrored=mirrored)

    def _opened(self) -> Route | None:
        with self._opening:
            if self._inner is None and not self.closed and self._open is not None:
                inner = self._open()
                with self._lock:
                    held, self._held = self._held, []
                    if inner is not None:  # shown on the console already
                        for which, text, fallback in held:
                            inner.write(which, text, fallback, mirrored=False)
                    self._inner = inner
                    if inner is None:
                        self.closed = True
            return self._inner

    def flush(self, which: int) -> None:
        inner = self._inner
        if inner is not None:
            inner.flush(which)

    def flush_if_dirty(self) -> None:
        inner = self._inner
        if inner is not None:
            inner.flush_if_dirty()

    def finish(self) -> None:
        with self._opening, self._lock:
            self.closed = True
            self._open = None
            self._held = []  # written to the run-level capture as they came

    def close(self) -> None:
        inner = self._inner
        if inner is not None:
            inner.close()


def _setup_error(context: StepExecutionContext, doing: str) -> DagsterEvent:
    return DagsterEvent.engine_event(
        context,
        f"Exception while {doing} the compute log capture of step '{context.step.key}'; "
        "its output goes to the run's capture",
        EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
    )


__all__ = ["Accept", "step_capture"]
