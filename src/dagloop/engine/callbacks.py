"""Execution callbacks: any object with some of the `Callbacks` methods.

Each method may be a plain function or a coroutine function. Plain ones run inline on
the loop (keep them short); coroutines are started as tasks and all are awaited before
`execute` returns. A callback that raises is logged and does not disturb the run.

Every node gets exactly one terminal callback: `on_node_complete` (COMPLETED),
`on_node_error` (FAILED or TIMED_OUT), `on_node_skip` (SKIPPED) or `on_node_cancel`
(CANCELLED).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .results import ExecutionResult

logger = logging.getLogger("dagloop")

EVENTS = (
    "on_execution_start",
    "on_node_start",
    "on_node_complete",
    "on_node_error",
    "on_node_skip",
    "on_node_cancel",
    "on_node_retry",
    "on_execution_end",
)


class Callbacks:
    """Optional base class documenting the hooks; subclass and override what you need."""

    def on_execution_start(self, total_nodes: int) -> Any: ...
    def on_node_start(self, name: str) -> Any: ...
    def on_node_complete(self, name: str, result: Any) -> Any: ...
    def on_node_error(self, name: str, error: BaseException) -> Any: ...
    def on_node_skip(self, name: str) -> Any: ...
    def on_node_cancel(self, name: str) -> Any: ...
    def on_node_retry(self, name: str, attempt: int, error: BaseException, delay: float) -> Any:
        """`attempt` is the number of the attempt that just failed (1-based)."""

    def on_node_expand(self, name: str, children: int) -> Any:
        """A node fanned out into `children` child nodes (the total grew)."""

    def on_execution_end(self, result: ExecutionResult) -> Any: ...


ALL_EVENTS = (*EVENTS, "on_node_expand")


class CallbackDispatcher:
    """Pre-resolves the handlers of each event so an event nobody listens to costs one
    truth test."""

    def __init__(self, listeners: Iterable[object]) -> None:
        self._pending: set[asyncio.Task[Any]] = set()
        handlers: dict[str, tuple[Callable[..., Any], ...]] = {}
        base_methods = {name: getattr(Callbacks, name) for name in ALL_EVENTS}
        for event in ALL_EVENTS:
            found = []
            for listener in listeners:
                method = getattr(listener, event, None)
                if method is None or not callable(method):
                    continue
                # Skip the no-op inherited from the Callbacks base class.
                if getattr(method, "__func__", None) is base_methods[event]:
                    continue
                found.append(method)
            handlers[event] = tuple(found)
        self.execution_start = handlers["on_execution_start"]
        self.node_start = handlers["on_node_start"]
        self.node_complete = handlers["on_node_complete"]
        self.node_error = handlers["on_node_error"]
        self.node_skip = handlers["on_node_skip"]
        self.node_cancel = handlers["on_node_cancel"]
        self.node_retry = handlers["on_node_retry"]
        self.node_expand = handlers["on_node_expand"]
        self.execution_end = handlers["on_execution_end"]

    def emit(self, handlers: tuple[Callable[..., Any], ...], *args: Any) -> None:
        for handler in handlers:
            try:
                outcome = handler(*args)
            except Exception:
                logger.exception("dagloop callback %r raised", handler)
                continue
            if asyncio.iscoroutine(outcome):
                pending = asyncio.get_running_loop().create_task(outcome)
                self._pending.add(pending)
                pending.add_done_callback(self._finished)

    def _finished(self, pending: asyncio.Task[Any]) -> None:
        self._pending.discard(pending)
        if not pending.cancelled() and pending.exception() is not None:
            logger.error("dagloop async callback raised", exc_info=pending.exception())

    async def drain(self) -> None:
        """Wait for every async callback started so far (and those they trigger)."""
        while self._pending:
            await asyncio.wait(list(self._pending))

    def cancel_pending(self) -> None:
        for pending in list(self._pending):
            pending.cancel()
