"""A level-triggered wake-up for one waiting coroutine, with an optional timeout."""

from __future__ import annotations

import asyncio


class Wakeup:
    """`set()` from the loop thread wakes the coroutine in `wait()`, or the next one to
    call it. Cheaper than `asyncio.Event` with `wait_for`: no task per timeout."""

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
