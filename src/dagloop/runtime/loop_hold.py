"""Measure how long an awaitable holds the event loop each time it is resumed.

A coroutine that calls blocking code (`time.sleep` inside `async def`) stalls every
other task on the loop. Wrapping it in `HoldTimed` times each resumption (the span
between being resumed and suspending again), which attributes a stall to the exact
awaitable that caused it, with no watchdog thread and about a microsecond per resume.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Generator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class HoldTimed(Generic[T]):
    __slots__ = ("_awaitable", "_on_hold")

    def __init__(self, awaitable: Awaitable[T], on_hold: Callable[[float], None]) -> None:
        self._awaitable = awaitable
        self._on_hold = on_hold

    def __await__(self) -> Generator[Any, Any, T]:
        inner = self._awaitable.__await__()
        value: Any = None
        error: BaseException | None = None
        while True:
            started = time.perf_counter()
            try:
                yielded = inner.throw(error) if error is not None else inner.send(value)
            except StopIteration as stop:
                self._on_hold(time.perf_counter() - started)
                return stop.value  # type: ignore[no-any-return]
            except BaseException:
                self._on_hold(time.perf_counter() - started)
                raise
            self._on_hold(time.perf_counter() - started)
            try:
                value = yield yielded
                error = None
            except BaseException as exc:
                value, error = None, exc
