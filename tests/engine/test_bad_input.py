"""Bad input: one test per case, each asserting the message names the culprit and that
nothing ran."""

from __future__ import annotations

import asyncio
import math
import threading
from typing import Any

import pytest

from dagloop import (
    DAG,
    AsyncDAGExecutor,
    ConfigError,
    CycleError,
    DAGExecutor,
    DuplicateNodeError,
    Pipeline,
    ResourceError,
    RetryPolicy,
    SelfLoopError,
    TaskBindingError,
    UnknownNodeError,
    build_dag,
    task,
)

from .conftest import make_dag

ran: list[str] = []


@pytest.fixture(autouse=True)
def nothing_ran() -> Any:
    ran.clear()
    yield
    assert ran == [], "bad input must be rejected before any task runs"


def work() -> str:
    ran.append("work")
    return "ok"


def test_cycle_message_shows_the_path() -> None:
    builder = DAG.builder().add_nodes(["a", "b", "c", "d"])
    builder.add_edges([("d", "a"), ("a", "b"), ("b", "c"), ("c", "a")])
    with pytest.raises(CycleError, match=r"graph has a cycle: a -> b -> c -> a") as info:
        builder.build()
    assert info.value.cycle == ["a", "b", "c", "a"]


def test_two_node_cycle() -> None:
    builder = DAG.builder().add_nodes(["x", "y"]).add_edges([("x", "y"), ("y", "x")])
    with pytest.raises(CycleError, match=r"cycle: (x -> y -> x|y -> x -> y)"):
        builder.build()


def test_self_loop_is_a_cycle_error() -> None:
    with pytest.raises(CycleError, match=r"edge 'a' -> 'a' is a self-loop") as info:
        DAG.builder().add_node("a").add_edge("a", "a")
    assert isinstance(info.value, SelfLoopError)
    assert info.value.cycle == ["a", "a"]


def test_misspelt_edge_target_is_caught_at_execute_with_a_suggestion() -> None:
    """add_edge creates the nodes it names, so the typo 'laod' builds; execute() then
    finds a node without a task and says where it came from."""
    dag = DAG.builder().add_nodes(["extract", "load"]).add_edge("extract", "laod").build()
    assert dag.nodes == ["extract", "load", "laod"]
    with pytest.raises(
        TaskBindingError,
        match=r"node 'laod' has no task; pass a callable for it \(the node was created by "
        r"add_edge\('extract', 'laod'\); if that name is a typo, fix the edge\); "
        r"did you mean 'load'\?",
    ):
        DAGExecutor(dag).execute({"extract": work, "load": work})


def test_misspelt_task_name_is_caught_at_execute_with_a_suggestion() -> None:
    dag = DAG.builder().add_edge("extract", "transform").build()
    with pytest.raises(
        UnknownNodeError, match=r"tasks names unknown node 'transfrom'; did you mean 'transform'\?"
    ):
        DAGExecutor(dag).execute({"extract": work, "transfrom": work})


def test_duplicate_node_name() -> None:
    with pytest.raises(DuplicateNodeError, match=r"node 'a' is added twice"):
        DAG.builder().add_node("a").add_node("a")


def test_non_string_node_name() -> None:
    with pytest.raises(ValueError, match=r"node names must be non-empty strings, got 3"):
        DAG.builder().add_node(3)  # type: ignore[arg-type]


def test_missing_task() -> None:
    dag = make_dag("ab", [("a", "b")])
    with pytest.raises(TaskBindingError, match=r"node 'b' has no task"):
        DAGExecutor(dag).execute({"a": work})


def test_non_callable_task() -> None:
    dag = make_dag("ab", [("a", "b")])
    with pytest.raises(TaskBindingError, match=r"task for node 'b' must be callable, got 42"):
        DAGExecutor(dag).execute({"a": work, "b": 42})


def test_task_for_unknown_node() -> None:
    dag = make_dag("ab")
    with pytest.raises(UnknownNodeError, match=r"tasks names unknown node 'c'"):
        DAGExecutor(dag).execute({"a": work, "b": work, "c": work})


def test_unsatisfiable_parameter() -> None:
    dag = make_dag(["fetch", "parse"], [("fetch", "parse")])

    def parse(fetch: str, encoding: str) -> str:
        ran.append("parse")
        return fetch

    with pytest.raises(
        TaskBindingError,
        match=r"node 'parse' has parameter 'encoding' that cannot be satisfied: it is neither "
        r"an upstream node \(upstream: 'fetch'\) nor a resource \(resources: none\)",
    ):
        DAGExecutor(dag).execute({"fetch": work, "parse": parse})


def test_parameter_naming_a_node_that_is_not_upstream_suggests_the_edge() -> None:
    dag = make_dag(["a", "b"])

    def b(a: str) -> str:
        return a

    with pytest.raises(TaskBindingError, match=r"add the edge 'a' -> 'b' to receive its result"):
        DAGExecutor(dag).execute({"a": work, "b": b})


def test_builder_call_that_does_not_match_the_signature() -> None:
    def parse(text: str) -> str:
        return text

    with (
        pytest.raises(
            TaskBindingError, match=r"node 'parse': cannot call parse\(\): too many positional"
        ),
        build_dag() as g,
    ):
        a = g.add_node(work)
        g.add_node(parse, a, a)


@pytest.mark.parametrize("bad", [0, -1, math.nan, math.inf, "5"])
def test_execution_timeout_must_be_positive_and_finite(bad: Any) -> None:
    dag = make_dag("a")
    with pytest.raises(ConfigError, match=r"^timeout must be"):
        DAGExecutor(dag).execute({"a": work}, timeout=bad)


@pytest.mark.parametrize("bad", [0, -0.5, math.nan])
def test_task_timeout_must_be_positive(bad: float) -> None:
    with pytest.raises(ConfigError, match=r"timeout of task 'work' must be"):
        task(work, timeout=bad)


def test_nan_timeout_message_says_nan() -> None:
    with pytest.raises(ConfigError, match=r"timeout must be a number of seconds, got NaN"):
        DAGExecutor(make_dag("a")).execute({"a": work}, timeout=math.nan)


@pytest.mark.parametrize("option", ["max_concurrency", "max_workers"])
@pytest.mark.parametrize("bad", [0, -3, 1.5, True])
def test_limits_must_be_positive_integers(option: str, bad: Any) -> None:
    with pytest.raises(ConfigError, match=rf"{option} must be a positive integer, got {bad!r}"):
        AsyncDAGExecutor(make_dag("a"), **{option: bad})


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_attempts": 0}, r"RetryPolicy.max_attempts must be a positive integer, got 0"),
        ({"delay": -1}, r"RetryPolicy.delay must be a finite number >= 0, got -1"),
        ({"delay": math.nan}, r"RetryPolicy.delay must be a finite number >= 0, got nan"),
        ({"backoff": 0.5}, r"RetryPolicy.backoff must be a finite number >= 1, got 0.5"),
        ({"max_delay": 0}, r"RetryPolicy.max_delay must be greater than 0"),
        ({"retry_on": (42,)}, r"RetryPolicy.retry_on must be exception classes"),
    ],
)
def test_retry_policy_validation(kwargs: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        RetryPolicy(**kwargs)


def test_negative_retries() -> None:
    with pytest.raises(
        ConfigError, match=r"retries must be a RetryPolicy or a number of retries >= 0"
    ):
        AsyncDAGExecutor(make_dag("a"), retries=-1)


def test_negative_cost() -> None:
    with pytest.raises(ConfigError, match=r"cost of node 'a' must be finite and >= 0, got -1"):
        AsyncDAGExecutor(make_dag("a"), costs={"a": -1})


def test_unknown_option_of_build_dag_suggests_the_right_one() -> None:
    with pytest.raises(
        ConfigError,
        match=r"unknown option 'max_concurency' for build_dag\(\); "
        r"did you mean 'max_concurrency'\?",
    ):
        build_dag(max_concurency=3)


def test_unknown_option_of_invoke() -> None:
    with build_dag() as g:
        g.add_node(work)
    with pytest.raises(
        ConfigError, match=r"unknown option 'timout' for invoke\(\); did you mean 'timeout'\?"
    ):
        g.invoke_sync(timout=3)


def test_executor_option_given_to_invoke() -> None:
    with build_dag() as g:
        g.add_node(work)
    with pytest.raises(
        ConfigError, match=r"'fail_fast' is an option of build_dag\(\), not of invoke\(\)"
    ):
        g.invoke_sync(fail_fast=False)


def test_unknown_option_of_pipeline() -> None:
    with pytest.raises(
        ConfigError, match=r"unknown option 'retry' for Pipeline\(\); did you mean 'retries'\?"
    ):
        Pipeline([work], retry=3)


def test_non_bool_flag() -> None:
    with pytest.raises(ConfigError, match=r"fail_fast must be True or False, got 'no'"):
        AsyncDAGExecutor(make_dag("a"), fail_fast="no")  # type: ignore[arg-type]


def test_wrong_cancel_event_type() -> None:
    with pytest.raises(
        ConfigError, match=r"cancel_event must be a threading.Event or an asyncio.Event"
    ):
        DAGExecutor(make_dag("a")).execute({"a": work}, cancel_event=object())


def test_invalid_resource_name() -> None:
    with pytest.raises(
        ConfigError, match=r"resource names must be valid parameter names, got 'my-db'"
    ):
        AsyncDAGExecutor(make_dag("a"), resources={"my-db": object()})


def test_resource_that_fails_to_open_names_it_and_nothing_runs() -> None:
    def broken() -> Any:
        raise ConnectionError("refused")

    with pytest.raises(
        ResourceError, match=r"resource 'db' failed to open: ConnectionError\('refused'\)"
    ):
        DAGExecutor(make_dag("a"), resources={"db": broken}).execute({"a": work})


def test_pipeline_parameter_named_after_its_own_task() -> None:
    def loop(loop: int) -> int:
        return loop

    with pytest.raises(SelfLoopError, match=r"edge 'loop' -> 'loop' is a self-loop"):
        Pipeline([loop])


def test_pipeline_cycle_through_parameter_names() -> None:
    def a(b: int) -> int:
        return b

    def b(a: int) -> int:
        return a

    with pytest.raises(CycleError, match=r"graph has a cycle: (a -> b -> a|b -> a -> b)"):
        Pipeline([a, b])


def test_pipeline_name_clash_between_task_and_resource() -> None:
    def db() -> int:
        return 1

    with pytest.raises(ConfigError, match=r"'db' is both a task and a resource"):
        Pipeline([db], resources={"db": object()})


def test_pipeline_lambda_needs_a_name() -> None:
    with pytest.raises(
        TaskBindingError, match=r"has no usable name; wrap it as task\(fn, name=...\)"
    ):
        Pipeline([lambda: 1])


def test_nodes_from_another_builder() -> None:
    with build_dag() as first:
        a = first.add_node(work)
    second = build_dag()
    with pytest.raises(ValueError, match=r"from a different graph builder"):
        second.add_node(work, a)


def test_dag_argument_must_be_a_dag() -> None:
    with pytest.raises(ConfigError, match=r"expected a DAG built with DAG.builder\(\), got \{\}"):
        AsyncDAGExecutor({})  # type: ignore[arg-type]


def test_asyncio_event_is_accepted_and_threading_event_too() -> None:
    dag = make_dag("a")

    def quiet() -> int:
        return 1

    assert DAGExecutor(dag).execute({"a": quiet}, cancel_event=threading.Event()).succeeded == 1

    async def main() -> int:
        result = await AsyncDAGExecutor(dag).execute({"a": quiet}, cancel_event=asyncio.Event())
        return result.succeeded

    assert asyncio.run(main()) == 1
