"""async-dag's API as dagloop's builder style: TaskManager, sort(), immediate nodes, the
parameter node's result, runs that do not mix, and failures raised from invoke."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dagloop import (
    ConfigError,
    DAGExecutor,
    ForeignResultError,
    GraphError,
    NodeFailures,
    NodeNotCompletedError,
    NodeStatus,
    NodeTimeoutError,
    TaskManager,
    build_dag,
    task,
)

from .conftest import make_dag


@dataclass
class Box:
    number: int


async def read(box: Box) -> int:
    return box.number


async def inc(n: int) -> int:
    return n + 1


async def add(a: int, b: int) -> int:
    return a + b


# -- TaskManager and sort() ------------------------------------------------------------


def test_task_manager_subscripted_and_sorted_by_hand() -> None:
    tm = TaskManager[Box]()
    start = tm.add_node(read, tm.parameter_node)
    end = tm.add_node(add, tm.add_node(inc, start), start)
    tm.sort()
    assert end.extract_result(tm.invoke_sync(Box(10))) == 21


def test_build_dag_takes_the_parameter_type_and_ignores_it_at_run_time() -> None:
    with build_dag(Box) as tm:
        start = tm.add_node(read, tm.parameter_node)
    # The type is for checkers only: nothing checks the argument at run time.
    assert start.extract_result(tm.invoke_sync(Box(3))) == 3
    with build_dag(int | None, max_concurrency=2) as typed:
        typed.add_node(inc, 1)
    assert typed.invoke_sync(None).ok


def test_build_dag_rejects_a_value_where_the_type_goes() -> None:
    with pytest.raises(
        ConfigError, match=r"type of invoke's argument positionally.*got the value 10"
    ):
        build_dag(10)  # type: ignore[call-overload]


def test_sort_twice_and_sort_inside_the_block_are_no_ops() -> None:
    tm = TaskManager[None]()
    node = tm.add_node(inc, 1)
    tm.sort()
    tm.sort()
    with build_dag() as inside:
        other = inside.add_node(inc, 5)
        inside.sort()
    assert node.extract_result(tm.invoke_sync()) == 2
    assert other.extract_result(inside.invoke_sync()) == 6


def test_adding_a_node_after_sort_is_an_error() -> None:
    tm = TaskManager[None]()
    tm.sort()
    with pytest.raises(ValueError, match=r"already built"):
        tm.add_node(inc, 1)


def test_immediate_nodes_return_their_value_and_get_distinct_names() -> None:
    payload = {"rows": [1, 2]}
    with build_dag() as tm:
        first = tm.add_immediate_node(payload)
        second = tm.add_immediate_node(None)
        named = tm.add_immediate_node(7, name="seven")
        total = tm.add_node(add, named, 1)
    result = tm.invoke_sync()
    assert first.extract_result(result) is payload
    assert second.extract_result(result) is None
    assert (first.name, second.name, named.name) == ("immediate", "immediate#2", "seven")
    assert total.extract_result(result) == 8


def test_parameter_node_result_is_the_invoke_argument() -> None:
    with build_dag(str) as tm:
        parameter = tm.parameter_node
        assert tm.parameter_node is parameter
    assert parameter.extract_result(tm.invoke_sync("FOO")) == "FOO"
    assert parameter.extract_result(tm.invoke_sync("BAR")) == "BAR"


# -- runs do not mix -------------------------------------------------------------------


def test_concurrent_invokes_of_one_graph_keep_separate_results() -> None:
    async def slow_double(n: int) -> int:
        await asyncio.sleep(0.01 * (n % 3))
        return 2 * n

    with build_dag(int) as tm:
        doubled = tm.add_node(slow_double, tm.parameter_node)
        plus_one = tm.add_node(inc, doubled)

    async def main() -> list[Any]:
        return await asyncio.gather(*(tm.invoke(n) for n in range(20)))

    results = asyncio.run(main())
    assert [doubled.extract_result(r) for r in results] == [2 * n for n in range(20)]
    assert [plus_one.extract_result(r) for r in results] == [2 * n + 1 for n in range(20)]
    assert [tm.parameter_node.extract_result(r) for r in results] == list(range(20))


def test_extracting_from_another_graphs_result_raises() -> None:
    def make() -> Any:
        with build_dag() as tm:
            node = tm.add_node(inc, 1)
        return tm, node

    tm_one, node_one = make()
    tm_two, node_two = make()
    assert node_one.name == node_two.name == "inc"
    result_two = tm_two.invoke_sync()
    with pytest.raises(ForeignResultError, match=r"extract_result\(\) of 'inc' .*another graph"):
        node_one.extract_result(result_two)
    with pytest.raises(ValueError, match=r"another graph"):
        tm_one.parameter_node.extract_result(result_two)
    mapping_style = DAGExecutor(make_dag(["inc"])).execute({"inc": lambda: 99})
    with pytest.raises(ForeignResultError):
        node_one.extract_result(mapping_style)
    with pytest.raises(ForeignResultError, match=r"takes the ExecutionResult"):
        node_one.extract_result({"inc": 2})


# -- failures --------------------------------------------------------------------------


def test_invoke_raises_the_failure_and_cancels_running_siblings_at_once() -> None:
    error = ValueError("FOO BAR")
    cancelled: list[str] = []

    async def sibling() -> str:
        try:
            await asyncio.sleep(2)
        except asyncio.CancelledError:
            cancelled.append("sibling")
            raise
        return "late"

    async def fail(n: int) -> None:
        await asyncio.sleep(0.01)
        raise error

    with build_dag() as tm:
        tm.add_node(sibling)
        tm.add_node(fail, tm.add_node(inc, 0))

    started = time.monotonic()
    with pytest.raises(NodeFailures, match=r"1 node failed: 'fail'") as raised:
        tm.invoke_sync()
    assert time.monotonic() - started < 1.0, "invoke raised without waiting for the sibling"
    assert raised.value.exceptions == (error,)
    assert raised.value.exceptions[0] is error
    assert cancelled == ["sibling"]
    result = raised.value.result
    assert result["sibling"].status is NodeStatus.CANCELLED
    assert result["fail"].status is NodeStatus.FAILED
    assert result.value("inc") == 1


def test_the_failure_group_is_an_exception_group_for_except_star() -> None:
    async def fail() -> None:
        raise KeyError("missing")

    with build_dag() as tm:
        tm.add_node(fail)
    caught: list[BaseException] = []
    try:
        tm.invoke_sync()
    except* KeyError as group:
        caught.extend(group.exceptions)
    assert len(caught) == 1 and isinstance(caught[0], KeyError)


def test_best_effort_lets_siblings_finish_and_groups_every_failure_in_order() -> None:
    async def fail_soon() -> None:
        await asyncio.sleep(0.01)
        raise ValueError("first")

    async def fail_later() -> None:
        await asyncio.sleep(0.05)
        raise RuntimeError("second")

    async def finish() -> str:
        await asyncio.sleep(0.08)
        return "finished"

    with build_dag(fail_fast=False) as tm:
        later = tm.add_node(fail_later)
        soon = tm.add_node(fail_soon)
        done = tm.add_node(finish)
        tm.add_node(inc, soon)
    with pytest.raises(NodeFailures, match=r"2 nodes failed: 'fail_soon', 'fail_later'") as raised:
        tm.invoke_sync()
    assert [str(e) for e in raised.value.exceptions] == ["first", "second"]
    assert raised.value.failed_nodes == ["fail_soon", "fail_later"]
    result = raised.value.result
    assert done.extract_result(result) == "finished"
    assert result["inc"].status is NodeStatus.SKIPPED
    with pytest.raises(NodeNotCompletedError):
        later.extract_result(result)


def test_a_node_timeout_is_raised_as_a_failure() -> None:
    async def slow() -> None:
        await asyncio.sleep(10)

    with build_dag() as tm:
        tm.add_node(task(slow, timeout=0.02))
    with pytest.raises(NodeFailures) as raised:
        tm.invoke_sync()
    assert isinstance(raised.value.exceptions[0], NodeTimeoutError)


def test_a_run_stopped_by_cancel_event_returns_instead_of_raising() -> None:
    async def first(event: asyncio.Event) -> None:
        event.set()
        await asyncio.sleep(0.01)

    async def after(_: None) -> str:
        return "never"

    async def main() -> Any:
        event = asyncio.Event()
        with build_dag() as tm:
            tm.add_node(after, tm.add_node(first, event))
        return await tm.invoke(None, cancel_event=event)

    result = asyncio.run(main())
    assert result["first"].status is NodeStatus.COMPLETED
    assert result["after"].status is NodeStatus.CANCELLED


def test_graph_errors_are_value_errors_as_in_async_dag() -> None:
    with build_dag() as first:
        node = first.add_node(inc, 1)
    with pytest.raises(ValueError), build_dag() as second:
        second.add_node(inc, node)
    assert issubclass(GraphError, ValueError)


# -- types -----------------------------------------------------------------------------


def test_the_parameter_type_reaches_type_checkers(tmp_path: Path) -> None:
    source = textwrap.dedent(
        """
        from typing import assert_type
        from dagloop import ExecutionResult, TaskManager, build_dag

        async def to_text(n: int) -> str:
            return str(n)

        async def check(result: ExecutionResult) -> None:
            with build_dag(int) as tm:
                text = tm.add_node(to_text, tm.parameter_node)
            assert_type(tm, TaskManager[int])
            assert_type(tm.parameter_node.extract_result(result), int)
            assert_type(text.extract_result(result), str)
            assert_type(TaskManager[bytes]().parameter_node.extract_result(result), bytes)
            await tm.invoke("not an int")  # the one error expected below
        """
    )
    path = tmp_path / "typed_usage.py"
    path.write_text(source)
    completed = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert "No module named mypy" not in completed.stderr, "mypy is a dev dependency"
    errors = [line for line in completed.stdout.splitlines() if ": error:" in line]
    assert len(errors) == 1, completed.stdout + completed.stderr
    assert 'Argument 1 to "invoke" of "TaskManager" has incompatible type "str"' in errors[0]
