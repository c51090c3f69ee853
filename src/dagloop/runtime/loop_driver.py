"""Drive a coroutine on a given (not running) event loop from synchronous code and
stream what it emits, as it emits it.

Dagster's executor interface is a synchronous iterator of events, while our
orchestrator is a coroutine on the loop that Dagster created for the run (async
resources live there). `iterate_on_loop` runs the loop until at least one item is
emitted, yields the items, and repeats: the consumer sees every event live, and the
loop only pauses while the consumer handles a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

T = TypeVar("T")

Emit = Callable[[T], None]


def iterate_on_loop(
    loop: asyncio.AbstractEventLoop,
    main: Callable[[Emit[T]], Coroutine[Any, Any, None]],
    on_interrupt: Callable[[BaseException], None],
) -> Iterator[T]:
    """Yield what `main(emit)` emits while it runs on `loop`.

    A KeyboardInterrupt that escapes the loop (a signal handler raising it while the
    loop waits) is handed to `on_interrupt` so `main` can wind down cleanly; it is
    re-raised once `main` has finished. If the consumer stops iterating early, `main`
    is cancelled and run to completion before the generator closes.
    """
    outbox: deque[T] = deque()
    wake: asyncio.Future[None] | None = None

    def emit(item: T) -> None:
        outbox.append(item)
        if wake is not None and not wake.done():
            wake.set_result(None)

    task = loop.create_task(main(emit))

    async def until_emitted() -> None:
        nonlocal wake
        if outbox or task.done():
            return
        wake = loop.create_future()

        def on_done(_: object) -> None:
            if wake is not None and not wake.done():
                wake.set_result(None)

        task.add_done_callback(on_done)
        try:
            await wake
        finally:
            task.remove_done_callback(on_done)
            wake = None

    interrupt: BaseException | None = None
    waiter: asyncio.Task[None] | None = None
    try:
        while True:
            if waiter is None:
                waiter = loop.create_task(until_emitted())
            try:
                loop.run_until_complete(waiter)
            except KeyboardInterrupt as exc:
                # The loop stopped mid-iteration; the waiter is still pending and is
                # resumed on the next pass rather than leaked.
                if interrupt is None:
                    interrupt = exc
                    on_interrupt(exc)
                continue
            waiter = None
            while outbox:
                yield outbox.popleft()
            if task.done():
                break
        task.result()
        if interrupt is not None:
            raise interrupt
    finally:
        if waiter is not None and not waiter.done():
            waiter.cancel()
        if not task.done():
            task.cancel()
            with contextlib.suppress(BaseException):
                loop.run_until_complete(task)
