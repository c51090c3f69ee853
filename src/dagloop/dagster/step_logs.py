"""Per-step stdout/stderr capture through the instance's compute log manager.

Dagster's `ComputeLogManager.capture_logs` captures a whole process (it swaps file
descriptors), so concurrent steps in one process cannot each use it. Instead, for the
run, `sys.stdout`/`sys.stderr` become routing proxies (`runtime/stream_proxy.py`), and
each step attempt writes through a `Route` bound in its own context to two streams the
manager opens under the step's own log key: `[run_id, "compute_logs", <file key>]`,
a fresh file key per attempt, exactly as a step of Dagster's multiprocess executor gets
(its child process runs a one-step plan that captures under such a key). A
LOGS_CAPTURED event naming that one step tells the UI where the step's logs are.

The run-level capture (`manager.capture_logs`, entered by the orchestrator as before)
keeps everything that cannot be attributed: writes outside any step, file-descriptor
level writes (C extensions, subprocesses), hooks, steps run elsewhere (Dask).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import sys
import threading
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Sequence
from contextlib import ExitStack, asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, TextIO

from dagloop.dagster._internals import (
    CapturedLogContext,
    CloudStorageComputeLogManager,
    ComputeIOType,
    DagsterEvent,
    EngineEventData,
    ExecutionStep,
    LocalComputeLogManager,
    PlanExecutionContext,
    StepExecutionContext,
    create_compute_log_file_key,
    serializable_error_info_from_exc_info,
)
from dagloop.dagster.python_logs import bound_to_step, writing_dagster_log_line
from dagloop.runtime import stream_proxy
from dagloop.runtime.stream_proxy import Route

ComputeLogs = Literal["per_step", "per_run"]
Accept = Callable[[DagsterEvent], None]


class _Accepts(Protocol):
    def accepts(self, step: ExecutionStep) -> bool: ...


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
        self._open: set[StepCapture] = set()
        self._local_dirs: dict[str, str | None] = {}
        self._stop = threading.Event()
        self._flusher: threading.Thread | None = None

    @property
    def per_step(self) -> bool:
        return self.mode == "per_step"

    def run_capture_step_keys(
        self, steps: Iterable[ExecutionStep], remote: _Accepts | None = None
    ) -> list[str]:
        """The steps the run-level LOGS_CAPTURED event names. The UI shows a step the
        first capture naming it, so with per-step capture only the steps that get none
        here (run elsewhere) are named."""
        return [
            step.key
            for step in steps
            if not self.per_step or (remote is not None and remote.accepts(step))
        ]

    # -- one step attempt --------------------------------------------------------------

    def open_step(self, context: StepExecutionContext) -> StepCapture | None:
        """Open the step's streams under a fresh log key of the run; None when the
        manager stores nothing (e.g. NoOpComputeLogManager)."""
        manager = self.manager
        log_key = manager.build_log_key_for_run(context.run_id, create_compute_log_file_key())
        capture: StepCapture | None
        if isinstance(manager, LocalComputeLogManager):
            capture = self._open_local(manager, log_key)
        else:
            capture = self._open_through_streams(manager, log_key)
        if capture is not None:
            self._open.add(capture)
            self._start_flusher()
        return capture

    def _route(self, out: TextIO, err: TextIO) -> Route:
        mirror_out, mirror_err = self._mirror or (None, None)
        return Route(
            out, err, mirror_stdout=mirror_out, mirror_stderr=mirror_err, flush_lines=False
        )

    def _open_local(self, manager: Any, log_key: Sequence[str]) -> StepCapture:
        """The local manager's files, at the paths it reads (`get_captured_local_path`),
        each created on the step's first write to it; the `complete` marker at the end,
        as after `capture_logs`. (`open_log_stream` would create, touch and resolve
        every path: five opens per step instead of one to three.)"""
        out_path, err_path, complete_path = self._local_paths(manager, log_key)
        out, err = _LazyFile(out_path), _LazyFile(err_path)

        def close() -> None:
            self._open.discard(capture)
            try:
                out.close()
                err.close()
            finally:
                _touch(complete_path)

        capture = StepCapture(log_key, self._route(out, err), close)  # type: ignore[arg-type]
        return capture

    def _local_paths(self, manager: Any, log_key: Sequence[str]) -> tuple[str, str, str]:
        *namespace, file_key = log_key
        prefix = "/".join(namespace)
        if prefix not in self._local_dirs:
            # Resolved once per run: the manager resolves symlinks for every path.
            probe = manager.get_captured_local_path(log_key, "out")
            directory = os.path.dirname(probe)
            same = probe == os.path.join(directory, f"{file_key}.out")
            if same:
                os.makedirs(directory, exist_ok=True)
            self._local_dirs[prefix] = directory if same else None
        directory = self._local_dirs[prefix]
        if directory is None or len(file_key) > 200:
            return (
                manager.get_captured_local_path(log_key, "out"),
                manager.get_captured_local_path(log_key, "err"),
                manager.complete_artifact_path(log_key),
            )
        return tuple(  # type: ignore[return-value]
            os.path.join(directory, f"{file_key}.{ext}") for ext in ("out", "err", "complete")
        )

    def _open_through_streams(self, manager: Any, log_key: Sequence[str]) -> StepCapture | None:
        stack = ExitStack()
        try:
            if isinstance(manager, CloudStorageComputeLogManager):
                # Written locally, uploaded once both streams are closed (below):
                # the manager's own open_log_stream uploads and deletes the local files
                # when either stream closes.
                writer = manager.local_manager
                finish = _finish_cloud(manager, log_key)
            else:
                writer = manager
                finish = _no_finish
            out = stack.enter_context(_text_stream(writer, log_key, ComputeIOType.STDOUT))
            err = stack.enter_context(_text_stream(writer, log_key, ComputeIOType.STDERR))
            if out is None or err is None:
                stack.close()
                return None
        except BaseException:
            stack.close()
            raise

        def close() -> None:
            self._open.discard(capture)
            try:
                stack.close()
            finally:
                finish()

        capture = StepCapture(log_key, self._route(out, err), close, blocking_close=True)
        return capture

    def _start_flusher(self) -> None:
        if self._flusher is not None:
            return
        self._flusher = threading.Thread(
            target=self._flush_periodically, name="dagloop-step-logs", daemon=True
        )
        self._flusher.start()

    def _flush_periodically(self) -> None:
        while not self._stop.wait(self.FLUSH_SECONDS):
            for capture in list(self._open):
                with contextlib.suppress(Exception):
                    capture.route.flush_if_dirty()

    def close_all(self) -> None:
        """Close what is still open when the run ends (a step left running in a thread);
        its later writes go to the run-level streams."""
        self._stop.set()
        for capture in list(self._open):
            with contextlib.suppress(Exception):
                capture.close()
        if self._flusher is not None:
            self._flusher.join(timeout=5)


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
    order, as before. A step that never writes anything of its own gets no capture. Most
    steps of a big run print nothing; they cost nothing here.
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


# -- helpers ---------------------------------------------------------------------------


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


@contextmanager
def _text_stream(manager: Any, log_key: Sequence[str], io_type: Any) -> Iterator[TextIO | None]:
    with manager.open_log_stream(log_key, io_type) as stream:
        if stream is None:
            yield None
        elif isinstance(stream, io.TextIOBase):
            yield stream  # type: ignore[misc]
        else:
            text = io.TextIOWrapper(stream, encoding="utf-8", write_through=True)
            try:
                yield text
            finally:
                text.flush()
                text.detach()


class _LazyFile:
    """A text file (append, UTF-8) opened on the first write: a step that never writes
    to stdout gets no stdout file (readers treat a missing file as empty)."""

    __slots__ = ("_file", "_path")

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _touch(path: str) -> None:
    with open(path, "a", encoding="utf-8"):
        pass


def _finish_cloud(manager: Any, log_key: Sequence[str]) -> Callable[[], None]:
    def finish() -> None:
        # What the manager does after `capture_logs` (`_on_capture_complete`).
        _touch(manager.local_manager.complete_artifact_path(log_key))
        manager.upload_to_cloud_storage(log_key, ComputeIOType.STDOUT)
        manager.upload_to_cloud_storage(log_key, ComputeIOType.STDERR)
        with contextlib.suppress(Exception):
            manager.local_manager.delete_logs(log_key=log_key)

    return finish


def _no_finish() -> None:
    pass


def _setup_error(context: StepExecutionContext, doing: str) -> DagsterEvent:
    return DagsterEvent.engine_event(
        context,
        f"Exception while {doing} the compute log capture of step '{context.step.key}'; "
        "its output goes to the run's capture",
        EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
    )


__all__ = ["ComputeLogs", "StepCapture", "StepLogs", "open_for_run", "step_capture"]
