"""A node that sets `cancel_event` and returns without awaiting stops its dependents,
whether node tasks start eagerly (Python 3.12+) or not.

With eager tasks such a node finishes inside the scheduler's start call, and the node it
releases is started by the same loop, so the event must be checked before every start.
On Python 3.11 `eager_start` does not exist; the test then emulates it: the node's first
step runs synchronously inside task creation, exactly what 3.12 does.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import threading
from collections.abc import Coroutine, Generator
from typing import Any

import pytest

from dagloop import AsyncDAGExecutor, NodeStatus
from dagloop.engine import scheduler

from .conftest import make_dag


class _Resume:
    """Continues, inside a task, a coroutine whose first step already ran."""

    def __init__(self, coro: Coroutine[Any, Any, None], first_yield: Any) -> None:
        self._coro = coro
        self._first_yield = first_yield

    def __await__(self) -> Generator[Any, Any, None]:
        to_yield = self._first_yield
        while True:
            try:
                sent = yield to_yield
            except BaseException as exc:  # thrown in by the task (cancellation)
                try:
                    to_yield = self._coro.throw(exc)
                except StopIteration:
                    return
            else:
                try:
                    to_yield = self._coro.send(sent)
                except StopIteration:
                    return


def _eager_task(loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], name: str) -> Any:
    if sys.version_info >= (3, 12):
        return asyncio.Task(coro, loop=loop, name=name, eager_start=True)
    try:
        first_yield = coro.send(None)
    except StopIteration:
        done: asyncio.Future[None] = loop.create_future()
        done.set_result(None)
        return done

    async def rest() -> None:
        await _Resume(coro, first_yield)

    return loop.create_task(rest(), name=name)


def _lazy_task(
    loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, None], name: str
) -> asyncio.Task[None]:
    return loop.create_task(coro, name=name)


@pytest.mark.parametrize("eager", [True, False], ids=["eager", "lazy"])
@pytest.mark.parametrize("kind", ["threading", "asyncio"])
def test_node_setting_cancel_event_without_awaiting_stops_its_dependents(
    eager: bool, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    make_task = _eager_task if eager else _lazy_task
    monkeypatch.setattr(scheduler, "_task_factory", lambda loop: functools.partial(make_task, loop))
    dag = make_dag(["a", "b", "c"], [("a", "b"), ("b", "c")])
    ran: list[str] = []

    async def main() -> Any:
        event: Any = threading.Event() if kind == "threading" else asyncio.Event()

        async def a() -> str:
            ran.append("a")
            event.set()  # and return at once: with eager tasks, inside the start call
            return "a"

        async def later() -> None:
            ran.append("later")

        return await AsyncDAGExecutor(dag).execute(
            {"a": a, "b": later, "c": later}, cancel_event=event
        )

    result = asyncio.run(main())
    assert ran == ["a"]
    assert result["a"].status is NodeStatus.COMPLETED
    assert result["b"].status is NodeStatus.CANCELLED
    assert result["c"].status is NodeStatus.CANCELLED
    assert result.cancelled == 2


def test_the_eager_emulation_really_runs_the_first_step_inside_task_creation() -> None:
    """Guards the emulation used above: a node body that never awaits has run by the time
    `_eager_task` returns, and the returned object is already done."""
    steps: list[str] = []

    async def body() -> None:
        steps.append("ran")

    async def main() -> None:
        task = _eager_task(asyncio.get_running_loop(), body(), "probe")
        assert steps == ["ran"]
        assert task.done()

    asyncio.run(main())
