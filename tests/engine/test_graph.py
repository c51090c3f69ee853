from __future__ import annotations

import pytest

from dagloop import DAG, CriticalPath, ExecutionStep

from .conftest import make_dag


def test_builder_chains_and_counts() -> None:
    dag = (
        DAG.builder()
        .add_node("a")
        .add_nodes(["b", "c", "d"])
        .add_edge("a", "b")
        .add_edges([("a", "c"), ("b", "d"), ("c", "d")])
        .build()
    )
    assert dag.node_count() == 4
    assert dag.edge_count() == 4
    assert dag.nodes == ["a", "b", "c", "d"]
    assert sorted(dag.edges) == [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")]
    assert dag.predecessors("d") == ["b", "c"]
    assert dag.successors("a") == ["b", "c"]
    assert "a" in dag and "z" not in dag
    assert len(dag) == 4


def test_repeated_edge_is_kept_once() -> None:
    dag = make_dag("ab", [("a", "b"), ("a", "b")])
    assert dag.edge_count() == 1


def test_topological_order_respects_every_edge() -> None:
    edges = [("e", "d"), ("d", "c"), ("c", "b"), ("b", "a"), ("e", "a")]
    dag = make_dag("abcde", edges)
    order = dag.topological_order()
    for source, target in edges:
        assert order.index(source) < order.index(target)


def test_execution_plan_levels() -> None:
    dag = make_dag("abcde", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("a", "d")])
    assert dag.execution_plan() == [
        ExecutionStep(0, ["a", "e"]),
        ExecutionStep(1, ["b", "c"]),
        ExecutionStep(2, ["d"]),
    ]


def test_critical_path_default_costs_counts_nodes() -> None:
    dag = make_dag("abcdx", [("a", "b"), ("b", "c"), ("a", "d"), ("d", "c")])
    path = dag.critical_path()
    assert path.cost == 3.0
    assert path.nodes[0] == "a" and path.nodes[-1] == "c" and len(path.nodes) == 3


def test_critical_path_follows_costs() -> None:
    dag = make_dag("abcd", [("a", "b"), ("b", "d"), ("a", "c"), ("c", "d")])
    assert dag.critical_path({"a": 1, "b": 10, "c": 2, "d": 1}) == CriticalPath(
        ["a", "b", "d"], 12.0
    )
    assert dag.critical_path({"a": 1, "b": 1, "c": 20, "d": 1}) == CriticalPath(
        ["a", "c", "d"], 22.0
    )


def test_critical_path_of_empty_graph() -> None:
    assert DAG.builder().build().critical_path() == CriticalPath([], 0.0)


def test_large_chain_builds_without_recursion() -> None:
    n = 50_000
    builder = DAG.builder().add_nodes(f"n{i}" for i in range(n))
    builder.add_edges((f"n{i}", f"n{i + 1}") for i in range(n - 1))
    dag = builder.build()
    assert dag.critical_path().cost == n
    assert len(dag.execution_plan()) == n


def test_index_of_unknown_name_suggests_close_match() -> None:
    dag = make_dag(["fetch", "parse"])
    with pytest.raises(KeyError, match="did you mean 'fetch'"):
        dag.predecessors("fetsh")
