"""dagron's API as dagloop's: implicit nodes, its executor signatures, its status table,
costs as hints, self-loops as cycles, and `@task` keeping the function's metadata."""

from __future__ import annotations

import asyncio
import threading
import warnings
from typing import Any

import pytest

from dagloop import (
    DAG,
    AsyncDAGExecutor,
    ConfigError,
    CycleError,
    DAGExecutor,
    DuplicateNodeError,
    GraphError,
    NodeStatus,
    Pipeline,
    task,
)

from .conftest import Recorder, make_dag

# -- the builder creates the nodes edges name ------------------------------------------


def test_add_edge_creates_the_nodes_it_names_in_order_of_appearance() -> None:
    dag = DAG.builder().add_edge("a", "b").add_edge("a", "c").add_edge("b", "d").build()
    assert dag.nodes == ["a", "b", "c", "d"]
    assert sorted(dag.edges) == [("a", "b"), ("a", "c"), ("b", "d")]


def test_add_node_after_add_edge_declares_the_node_and_may_add_a_predicate() -> None:
    dag = (
        DAG.builder()
        .add_edge("size", "large")
        .add_node("large", when=lambda upstream: upstream["size"] > 10)
        .build()
    )
    assert dag.nodes == ["size", "large"]
    result = DAGExecutor(dag).execute({"size": lambda: 3, "large": lambda: "big"})
    assert result["large"].status is NodeStatus.SKIPPED


def test_declaring_a_node_twice_is_still_an_error() -> None:
    builder = DAG.builder().add_edge("a", "b").add_node("b")
    with pytest.raises(DuplicateNodeError, match=r"node 'b' is added twice"):
        builder.add_node("b")


@pytest.mark.parametrize("bad", ["", 7, None])
def test_an_edge_naming_a_non_string_node_is_rejected(bad: Any) -> None:
    with pytest.raises(GraphError, match=r"node names must be non-empty strings"):
        DAG.builder().add_edge("a", bad)


def test_a_cycle_made_of_edges_alone_is_reported() -> None:
    builder = DAG.builder().add_edge("a", "b").add_edge("b", "c").add_edge("c", "a")
    with pytest.raises(CycleError, match=r"graph has a cycle: a -> b -> c -> a"):
        builder.build()


def test_pipeline_parameter_named_after_its_own_task_is_a_cycle_error() -> None:
    def loop(loop: int) -> int:
        return loop

    with pytest.raises(CycleError, match=r"self-loop"):
        Pipeline([loop])


# -- executor signatures ---------------------------------------------------------------


@pytest.mark.parametrize("executor_class", [DAGExecutor, AsyncDAGExecutor])
def test_max_workers_may_be_given_positionally(executor_class: Any) -> None:
    assert executor_class(make_dag("a"), 4).max_workers == 4


def test_every_parameter_dagron_lists_is_accepted_positionally_too() -> None:
    hooks = Recorder()
    dag = make_dag("ab", [("a", "b")])
    executor = DAGExecutor(dag, 2, {"a": 2.0}, None, True, False, hooks)
    result = executor.execute({"a": lambda: 1, "b": lambda a: a + 1}, 30.0, threading.Event())
    assert result.value("b") == 2
    assert hooks.names("complete") == ["a", "b"]


def test_hooks_and_callbacks_both_receive_every_event() -> None:
    callbacks, hooks = Recorder(), Recorder()
    dag = make_dag("ab", [("a", "b")])

    async def main() -> Any:
        executor = AsyncDAGExecutor(
            dag, max_workers=None, callbacks=callbacks, hooks=[hooks], enable_tracing=True
        )
        return await executor.execute({"a": lambda: 1, "b": lambda: 2}, timeout=None)

    assert asyncio.run(main()).ok
    assert callbacks.events == hooks.events
    assert hooks.names("start") == ["a", "b"]


@pytest.mark.parametrize("executor_class", [DAGExecutor, AsyncDAGExecutor])
def test_unknown_constructor_keyword_is_a_config_error_naming_it(executor_class: Any) -> None:
    name = executor_class.__name__
    with pytest.raises(
        ConfigError,
        match=rf"unknown option 'max_worker' for {name}\(\); did you mean 'max_workers'\?",
    ):
        executor_class(make_dag("a"), max_worker=2)


def test_execute_option_given_to_the_constructor_says_where_it_belongs() -> None:
    with pytest.raises(ConfigError, match=r"'timeout' is an option of execute\(\), not of"):
        DAGExecutor(make_dag("a"), timeout=3)


def test_unknown_execute_keyword_is_a_config_error_naming_it() -> None:
    executor = DAGExecutor(make_dag("a"))
    with pytest.raises(
        ConfigError, match=r"unknown option 'timout' for execute\(\); did you mean 'timeout'\?"
    ):
        executor.execute({"a": lambda: 1}, timout=3)
    with pytest.raises(
        ConfigError, match=r"'fail_fast' is an option of DAGExecutor\(\), not of execute\(\)"
    ):
        executor.execute({"a": lambda: 1}, fail_fast=False)


def test_unknown_async_execute_keyword_is_a_config_error() -> None:
    async def main() -> None:
        await AsyncDAGExecutor(make_dag("a")).execute({"a": lambda: 1}, cancel=None)

    with pytest.raises(ConfigError, match=r"unknown option 'cancel' for execute\(\)"):
        asyncio.run(main())


def test_a_hooks_object_without_any_known_method_is_rejected() -> None:
    class Misspelt:
        def on_node_completed(self, name: str, result: Any) -> None: ...

    with pytest.raises(
        ConfigError,
        match=r"hooks object .* has none of the methods dagloop calls .*; it has "
        r"'on_node_completed'; did you mean 'on_node_complete'\?",
    ):
        DAGExecutor(make_dag("a"), hooks=Misspelt())


# -- statuses follow dagron's table ----------------------------------------------------


def test_nodes_after_a_timed_out_node_are_skipped() -> None:
    dag = make_dag(["slow", "after", "free"], [("slow", "after")])

    async def slow() -> None:
        await asyncio.sleep(10)

    result = DAGExecutor(dag, fail_fast=False).execute(
        {"slow": task(slow, timeout=0.05), "after": lambda: 1, "free": lambda: 2}
    )
    assert result["slow"].status is NodeStatus.TIMED_OUT
    assert result["after"].status is NodeStatus.SKIPPED
    assert result["free"].status is NodeStatus.COMPLETED


def test_nodes_after_a_global_timeout_are_skipped_never_cancelled(recorder: Recorder) -> None:
    dag = make_dag(["hang", "child", "grandchild"], [("hang", "child"), ("child", "grandchild")])

    async def hang() -> None:
        await asyncio.sleep(10)

    result = DAGExecutor(dag, callbacks=recorder).execute(
        {"hang": hang, "child": lambda: 1, "grandchild": lambda: 2}, timeout=0.05
    )
    assert [result[n].status for n in dag.nodes] == [
        NodeStatus.TIMED_OUT,
        NodeStatus.SKIPPED,
        NodeStatus.SKIPPED,
    ]
    assert recorder.names("skip") == ["child", "grandchild"]
    assert recorder.names("cancel") == []


def test_nodes_after_a_skipped_node_are_skipped() -> None:
    dag = (
        DAG.builder()
        .add_edge("gate", "maybe")
        .add_edge("maybe", "after")
        .add_node("maybe", when=lambda upstream: False)
        .build()
    )
    result = DAGExecutor(dag).execute({"gate": lambda: 1, "maybe": lambda: 2, "after": lambda: 3})
    assert result["maybe"].status is NodeStatus.SKIPPED
    assert result["after"].status is NodeStatus.SKIPPED
    assert result.skipped == 2 and result.cancelled == 0


def test_cancelled_is_what_cancel_event_gives() -> None:
    dag = make_dag(["first", "second"], [("first", "second")])
    cancel = threading.Event()

    def first() -> None:
        cancel.set()

    result = DAGExecutor(dag).execute({"first": first, "second": lambda: 1}, cancel_event=cancel)
    assert result["second"].status is NodeStatus.CANCELLED
    assert result.cancelled == 1 and result.skipped == 0


def test_a_status_prints_as_its_name() -> None:
    assert str(NodeStatus.FAILED) == "FAILED"
    assert f"{NodeStatus.TIMED_OUT}" == "TIMED_OUT"
    assert NodeStatus.TIMED_OUT.value == "timed-out"


# -- costs are hints -------------------------------------------------------------------


def test_costs_naming_unknown_nodes_warn_once_and_the_run_goes_on() -> None:
    dag = make_dag("ab", [("a", "b")])
    with pytest.warns(UserWarning) as caught:
        executor = DAGExecutor(dag, costs={"a": 3.0, "train_model": 100.0, "evaluate": 10.0})
    assert len(caught) == 1
    message = str(caught[0].message)
    assert "'train_model', 'evaluate'" in message and "ignored" in message
    assert caught[0].filename == __file__, "the warning points at the caller's line"
    assert executor.execute({"a": lambda: 1, "b": lambda: 2}).ok


def test_a_single_misspelt_cost_name_gets_a_suggestion() -> None:
    dag = make_dag(["extract", "load"])
    with pytest.warns(UserWarning, match=r"ignored: 'laod'; did you mean 'load'\?"):
        dag.critical_path({"laod": 5.0})


def test_known_costs_do_not_warn_and_bad_values_are_still_errors() -> None:
    dag = make_dag("ab")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        AsyncDAGExecutor(dag, costs={"a": 2.0, "b": 0})
    with pytest.raises(ConfigError, match=r"cost of node 'zzz' must be finite and >= 0"):
        AsyncDAGExecutor(dag, costs={"zzz": -1})


# -- @task -----------------------------------------------------------------------------


def test_task_keeps_the_functions_name_doc_and_wrapped() -> None:
    def normalize(download: dict[str, list[int]]) -> list[int]:
        """Depends on 'download' because of the parameter name."""
        return [x * 10 for x in download["raw"]]

    decorated = task(normalize)
    configured = task(timeout=5)(normalize)
    for wrapped in (decorated, configured):
        assert wrapped.__name__ == "normalize"
        assert wrapped.__doc__ == "Depends on 'download' because of the parameter name."
        assert wrapped.__wrapped__ is normalize
        assert wrapped.__qualname__ == normalize.__qualname__
        assert wrapped.__module__ == __name__
    assert task(normalize, name="norm").name == "norm"
    assert task(normalize, name="norm").__name__ == "normalize"
