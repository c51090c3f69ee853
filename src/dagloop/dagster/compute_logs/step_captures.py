"""The per-step captures of one run in this process.

For the run, `sys.stdout`/`sys.stderr` become routing proxies (`runtime/stream_proxy.py`);
each step attempt that writes gets its own `StepCapture`: a `Route` to the streams
stored under the step's own log key (`backends.py`). What cannot be attributed to a step
goes to the run-level capture (`run_capture.py`).
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, TextIO

from dagloop.dagster._internals import (
    CloudStorageComputeLogManager,
    ExecutionStep,
    LocalComputeLogManager,
    PlanExecutionContext,
    StepExecutionContext,
)
from dagloop.dagster.compute_logs.backends import StepStorage
from dagloop.dagster.compute_logs.flusher import Flusher
from dagloop.runtime import stream_proxy
from dagloop.runtime.stream_proxy import Route

ComputeLogs = Literal["per_step", "per_run"]


@dataclass(eq=False)
class StepCapture:
    """One step attempt's open capture."""

    log_key: Sequence[str]
    route: Route
    _close: Callable[[], None]
    #: Closing uploads (a cloud manager): done off the loop.
    blocking_close: bool = False
    closed: bool = field(default=False)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        self.route.close()
        self._close()


class StepLogs:
    """The per-step captures of one run in this process (`open_for_run`)."""

    #: How often lines written since the last flush are flushed (for the UI to follow).
    FLUSH_SECONDS = 0.5

    def __init__(self, manager: Any, mode: ComputeLogs, *, mirror: tuple[TextIO, TextIO] | None):
        self.manager = manager
        self.mode = mode
        self._mirror = mirror
        self._storage = StepStorage(manager)
        self._open: set[StepCapture] = set()
        self._flusher = Flusher(self._open_routes, self.FLUSH_SECONDS, name="dagloop-step-logs")

    @property
    def per_step(self) -> bool:
        return self.mode == "per_step"

    def run_capture_step_keys(self, steps: Iterable[ExecutionStep]) -> list[str]:
        """The steps the run-level LOGS_CAPTURED event names. The UI shows a step the
        first capture naming it, so with per-step capture (wherever a step runs: a Dask
        worker captures its steps the same way) it names none."""
        return [] if self.per_step else [step.key for step in steps]

    def open_step(self, context: StepExecutionContext) -> StepCapture | None:
        """Open the step's streams under a fresh log key of the run; None when the
        manager stores nothing (e.g. NoOpComputeLogManager)."""
        streams = self._storage.open(context.run_id)
        if streams is None:
            return None
        close_streams = streams.close

        def close() -> None:
            self._open.discard(capture)
            close_streams()

        mirror_out, mirror_err = self._mirror or (None, None)
        route = Route(
            streams.stdout,
            streams.stderr,
            mirror_stdout=mirror_out,
            mirror_stderr=mirror_err,
            flush_lines=False,
        )
        capture = StepCapture(streams.log_key, route, close, streams.blocking_close)
        self._open.add(capture)
        self._flusher.start()
        return capture

    def _open_routes(self) -> list[Route]:
        return [capture.route for capture in list(self._open)]

    def close_all(self) -> None:
        """Close what is still open when the run ends (a step left running in a thread);
        its later writes go to the run-level streams."""
        self._flusher.stop()
        for capture in list(self._open):
            with contextlib.suppress(Exception):
                capture.close()
        self._flusher.join(timeout=5)


@contextmanager
def open_for_run(job_context: PlanExecutionContext, mode: ComputeLogs) -> Iterator[StepLogs]:
    """Per-step capture for one run: installs the stream proxies for its duration.

    Enter it before the run-level capture (which redirects the process's file
    descriptors): the steps' lines are also copied to the terminal the process had,
    as Dagster's own capture does (it tails its files to the original streams).
    """
    manager = job_context.instance.compute_log_manager
    if mode != "per_step":
        yield StepLogs(manager, mode, mirror=None)
        return
    with ExitStack() as stack:
        mirror = None
        if isinstance(manager, LocalComputeLogManager | CloudStorageComputeLogManager):
            mirror = _terminal_copies(stack)
        logs = StepLogs(manager, mode, mirror=mirror)
        stack.enter_context(stream_proxy.installed())
        stack.callback(logs.close_all)
        yield logs


def _terminal_copies(stack: ExitStack) -> tuple[TextIO, TextIO] | None:
    """Text streams on duplicates of the process's stdout/stderr descriptors as they are
    now (before the run-level capture redirects them); None if there are none."""
    try:
        fds = (sys.stdout.fileno(), sys.stderr.fileno())
    except (AttributeError, OSError, ValueError):
        return None
    streams = []
    for fd, base in zip(fds, (sys.stdout, sys.stderr), strict=True):
        copy = stack.enter_context(
            open(  # noqa: SIM115 - closed by the stack
                os.dup(fd),
                "w",
                encoding=getattr(base, "encoding", None) or "utf-8",
                errors="backslashreplace",
                closefd=True,
            )
        )
        streams.append(copy)
    return streams[0], streams[1]


__all__ = ["ComputeLogs", "StepCapture", "StepLogs", "open_for_run"]
