"""Records of Dagster's managed Python loggers, each stored by the step that logged it.

While a step's user code runs, Dagster captures what is logged through its managed
Python loggers (`dg.get_dagster_logger()`, the instance's `managed_python_loggers`) by
attaching the step's handler to those process-wide loggers, and detaches it afterwards.
That is right for one step at a time. With many steps in flight in one process, every
step's handler would hang on the same loggers at once: a record would go to whichever
step attached first (not the one that logged it), and attaching and detaching would
cost O(steps in flight) each, O(N^2) for a wide fan-out.

Here, for the run, one `_Router` handler is attached to each managed logger, and each
step's log manager (`RoutedLogManager`, made by `with_tags` from the run's) only marks
its capture active. The step is found through a context variable bound around the step
(`bound_to_step`, in its task; its greenlet and worker thread inherit it): a record is
handed to the handler of the step's innermost active capture, and dropped when none is
active, exactly as Dagster's attach/detach does for one step. Code outside any step
(e.g. a hook) keeps Dagster's own attach/detach.
"""

from __future__ import annotations

import contextvars
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from dagloop.dagster._internals import (
    DagsterLogManager,
    PlanExecutionContext,
    StepExecutionContext,
    dagster_handler,
    managed_loggers,
    replace_run_log_manager,
)


@dataclass(eq=False)
class _StepCaptures:
    """The log managers of one step (its own and those derived from it) whose capture
    is active, innermost last."""

    router: _Router
    active: list[DagsterLogManager] = field(default_factory=list)


_step_captures: contextvars.ContextVar[_StepCaptures | None] = contextvars.ContextVar(
    "dagloop_step_python_logs", default=None
)
#: Set while a step's Dagster log handler emits a record (its console line, ...).
_emitting: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "dagloop_emitting_dagster_log", default=False
)


def writing_dagster_log_line() -> bool:
    """True while the calling code writes one of Dagster's own log lines for a step
    (its loggers' handlers, e.g. the console's), not output of the step's own code."""
    return _emitting.get()


def _flag_emits(handler: logging.Handler) -> None:
    emit = handler.emit

    def flagged(record: logging.LogRecord) -> None:
        token = _emitting.set(True)
        try:
            emit(record)
        finally:
            _emitting.reset(token)

    handler.emit = flagged  # type: ignore[method-assign]


class _Router(logging.Handler):
    def __init__(self, loggers: list[logging.Logger]) -> None:
        super().__init__()
        self.loggers = loggers

    def handle(self, record: logging.LogRecord) -> bool:
        captures = _step_captures.get()
        if captures is None or captures.router is not self or not captures.active:
            return False
        return bool(dagster_handler(captures.active[-1]).handle(record))

    def emit(self, record: logging.LogRecord) -> None:  # handle() does the work
        pass


class RoutedLogManager(DagsterLogManager):
    """A log manager whose Python-log capture marks it active for its step instead of
    attaching its handler to the shared loggers (when its step is bound)."""

    def __init__(self, source: Any, router: _Router, captures: _StepCaptures | None) -> None:
        super().__init__(
            dagster_handler=dagster_handler(source),
            level=source.level,
            managed_loggers=managed_loggers(source),
        )
        self._router = router
        #: The step's captures (None: the run's own manager, not a step's yet).
        self._captures = captures
        #: Per begin: True if it marked the step's capture, False if it attached.
        self._begun: list[bool] = []

    def with_tags(self, **new_tags: str) -> RoutedLogManager:
        derived = DagsterLogManager.with_tags(self, **new_tags)
        # A step's context is made from the run's manager: it starts the step's captures;
        # managers made from a step's (inputs, outputs) share them.
        captures = self._captures or _StepCaptures(self._router)
        _flag_emits(dagster_handler(derived))
        return RoutedLogManager(derived, self._router, captures)

    def begin_python_log_capture(self) -> None:
        captures = self._captures
        routed = captures is not None and _step_captures.get() is captures
        self._begun.append(routed)
        if routed:
            assert captures is not None
            captures.active.append(self)
        else:
            super().begin_python_log_capture()

    def end_python_log_capture(self) -> None:
        routed = self._begun.pop() if self._begun else False
        if not routed:
            super().end_python_log_capture()
            return
        assert self._captures is not None
        active = self._captures.active
        for index in range(len(active) - 1, -1, -1):
            if active[index] is self:
                del active[index]
                break


def route_python_logs(job_context: PlanExecutionContext) -> Callable[[], None]:
    """Route the run's managed Python loggers per step (see the module's docstring);
    returns what undoes it."""
    run_manager = job_context.log
    loggers = list(managed_loggers(run_manager))
    router = _Router(loggers)
    for logger in loggers:
        logger.addHandler(router)
    restore = replace_run_log_manager(job_context, RoutedLogManager(run_manager, router, None))

    def undo() -> None:
        restore()
        for logger in loggers:
            logger.removeHandler(router)

    return undo


@contextmanager
def bound_to_step(context: StepExecutionContext) -> Iterator[None]:
    """Records logged in this block (and in greenlets and threads started from it) are
    the step's, while one of its captures is active."""
    log = context.log
    captures = log._captures if isinstance(log, RoutedLogManager) else None
    if captures is None:
        yield
        return
    token = _step_captures.set(captures)
    try:
        yield
    finally:
        _step_captures.reset(token)
