"""Run synchronous code on the event loop in a greenlet, letting it await.

`await run_in_greenlet(fn)` starts `fn` in a child greenlet of the task that awaits
it. Whenever code inside calls `await_(awaitable)`, the child switches back to that
task, which awaits the object on the running loop and switches back into the child
with the result or the exception. Synchronous code (here: Dagster's step machinery)
thus drives native coroutines on the shared loop without a second loop or thread.
This is the bridge SQLAlchemy's asyncio layer is built on, written for our needs:
switch hooks (to swap per-greenlet process state such as signal handlers) and a
hook that chooses what a cancellation becomes inside the synchronous code.
"""

from __future__ import annotations

import asyncio
import contextvars
import time
from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

import greenlet

T = TypeVar("T")


class SwitchHooks(Protocol):
    """Called around every stretch of time the child greenlet runs."""

    def entering(self) -> None: ...

    def leaving(self, held_seconds: float) -> None: ...


class _BridgedGreenlet(greenlet.greenlet):  # type: ignore[misc]
    driver: greenlet.greenlet


def in_bridged_greenlet() -> bool:
    """True when called from synchronous code started by `run_in_greenlet`."""
    return isinstance(greenlet.getcurrent(), _BridgedGreenlet)


def await_(awaitable: Awaitable[T]) -> T:
    """Await `awaitable` from synchronous code running inside `run_in_greenlet`."""
    current = greenlet.getcurrent()
    if not isinstance(current, _BridgedGreenlet):
        raise RuntimeError(
            "await_() was called outside of run_in_greenlet(); there is no event loop task "
            "to await on"
        )
    result: T = current.driver.switch(awaitable)
    return result


async def run_in_greenlet(
    fn: Callable[..., T],
    *args: Any,
    hooks: SwitchHooks | None = None,
    on_cancel: Callable[[BaseException], BaseException] | None = None,
) -> T:
    """Run `fn(*args)` in a greenlet whose `await_` calls are awaited by this task.

    An exception raised by an awaited object is thrown into the synchronous code at
    its `await_` call. `on_cancel` chooses what a cancellation of this task becomes
    there (by default the `CancelledError` itself); the synchronous code may handle
    it and carry on, and the cancellation is then consumed.
    """
    child = _BridgedGreenlet(fn)
    child.driver = greenlet.getcurrent()
    # A new greenlet starts with an empty contextvars context; inherit ours.
    child.gr_context = contextvars.copy_context()

    def resume(method: Callable[..., Any], *values: Any) -> Any:
        if hooks is None:
            return method(*values)
        hooks.entering()
        started = time.perf_counter()
        try:
            return method(*values)
        finally:
            hooks.leaving(time.perf_counter() - started)

    pending = resume(child.switch, *args)
    while not child.dead:
        try:
            value = await pending
        except BaseException as exc:  # every outcome is forwarded to the child
            thrown = exc
            if on_cancel is not None and _task_was_cancelled(exc):
                # Consumed here: the synchronous code decides what the cancellation means.
                current = asyncio.current_task()
                assert current is not None
                current.uncancel()
                thrown = on_cancel(exc)
            # Passed explicitly, the traceback the exception already carries (the
            # awaited code's frames, where it was raised) stays below the `await_` call
            # it resurfaces from; greenlet would otherwise replace it.
            pending = resume(child.throw, type(thrown), thrown, thrown.__traceback__)
        else:
            pending = resume(child.switch, value)
    return pending  # type: ignore[no-any-return]


def _task_was_cancelled(exc: BaseException) -> bool:
    """True for a cancellation of the awaiting task itself, False for a CancelledError
    that the awaited code raised on its own (forwarded like any other exception)."""
    if not isinstance(exc, asyncio.CancelledError):
        return False
    current = asyncio.current_task()
    return current is not None and current.cancelling() > 0
