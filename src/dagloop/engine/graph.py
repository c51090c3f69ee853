"""The immutable graph: names, edges, optional predicates, and the analyses on them.

Nodes are stored by integer index (their order of insertion) so that the scheduler
works on flat lists; names are only looked up at the edges of the API.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from .errors import (
    ConfigError,
    CycleError,
    DuplicateNodeError,
    GraphError,
    SelfLoopError,
    UnknownNodeError,
    did_you_mean,
)
from .validation import warn_from_caller

#: Receives the upstream results of a node, by upstream name; False skips the node.
NodePredicate = Callable[[Mapping[str, Any]], bool]
#: Receives the result of the edge's source node; False skips the edge's target.
EdgePredicate = Callable[[Any], bool]


@dataclass(frozen=True, slots=True)
class ExecutionStep:
    """One level of `DAG.execution_plan()`: nodes whose dependencies are all on earlier levels."""

    level: int
    nodes: list[str]


@dataclass(frozen=True, slots=True)
class CriticalPath:
    """The most expensive chain of dependent nodes and its summed cost."""

    nodes: list[str]
    cost: float


class DAG:
    """A validated directed acyclic graph of named nodes. Build one with `DAG.builder()`."""

    __slots__ = (
        "_edge_predicates",
        "_implicit",
        "_index",
        "_names",
        "_node_predicates",
        "_preds",
        "_succs",
        "_topo",
    )

    def __init__(
        self,
        names: Sequence[str],
        preds: Sequence[tuple[int, ...]],
        succs: Sequence[tuple[int, ...]],
        topo: Sequence[int],
        node_predicates: Mapping[int, NodePredicate],
        edge_predicates: Mapping[tuple[int, int], EdgePredicate],
        implicit: Mapping[str, tuple[str, str]] | None = None,
    ) -> None:
        # Private: DAGBuilder.build() is the only caller and has validated everything.
        self._names = tuple(names)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._preds = tuple(preds)
        self._succs = tuple(succs)
        self._topo = tuple(topo)
        self._node_predicates = dict(node_predicates)
        self._edge_predicates = dict(edge_predicates)
        #: Nodes created by an edge and never declared: name -> the first such edge.
        self._implicit = dict(implicit or {})

    @staticmethod
    def builder() -> DAGBuilder:
        return DAGBuilder()

    # -- structure -------------------------------------------------------------------

    def node_count(self) -> int:
        return len(self._names)

    def edge_count(self) -> int:
        return sum(len(p) for p in self._preds)

    @property
    def nodes(self) -> list[str]:
        """Node names in insertion order."""
        return list(self._names)

    @property
    def edges(self) -> list[tuple[str, str]]:
        names = self._names
        return [(names[s], names[t]) for t, ps in enumerate(self._preds) for s in ps]

    def __len__(self) -> int:
        return len(self._names)

    def __contains__(self, name: object) -> bool:
        return name in self._index

    def __repr__(self) -> str:
        return f"<DAG nodes={self.node_count()} edges={self.edge_count()}>"

    def index_of(self, name: str, where: str = "lookup") -> int:
        try:
            return self._index[name]
        except KeyError:
            raise UnknownNodeError(name, where, self._names) from None

    def predecessors(self, name: str) -> list[str]:
        return [self._names[p] for p in self._preds[self.index_of(name)]]

    def successors(self, name: str) -> list[str]:
        return [self._names[s] for s in self._succs[self.index_of(name)]]

    def topological_order(self) -> list[str]:
        return [self._names[i] for i in self._topo]

    # -- analyses --------------------------------------------------------------------

    def execution_plan(self) -> list[ExecutionStep]:
        """Levels of nodes that can run together (a node's level is its longest path
        from a root). The engine does not wait for levels; this is only a preview."""
        level = [0] * len(self._names)
        for i in self._topo:
            for p in self._preds[i]:
                level[i] = max(level[i], level[p] + 1)
        steps: list[list[str]] = []
        for i, lv in enumerate(level):
            while len(steps) <= lv:
                steps.append([])
            steps[lv].append(self._names[i])
        return [ExecutionStep(lv, nodes) for lv, nodes in enumerate(steps)]

    def critical_path(self, costs: Mapping[str, float] | None = None) -> CriticalPath:
        """The chain of dependent nodes with the greatest summed cost (1.0 per node
        unless `costs` says otherwise)."""
        cost = self.cost_vector(costs)
        if not self._names:
            return CriticalPath([], 0.0)
        best = [0.0] * len(cost)
        via = [-1] * len(cost)
        for i in self._topo:
            start = 0.0
            for p in self._preds[i]:
                if via[i] == -1 or best[p] > start:
                    start, via[i] = best[p], p
            best[i] = start + cost[i]
        end = max(range(len(best)), key=best.__getitem__)
        path = [end]
        while via[path[-1]] != -1:
            path.append(via[path[-1]])
        return CriticalPath([self._names[i] for i in reversed(path)], best[end])

    def cost_vector(self, costs: Mapping[str, float] | None) -> list[float]:
        """Validated per-index costs; nodes absent from `costs` cost 1.0.

        Costs are hints: a name that is not a node is reported in one warning and
        ignored, so hints shared between graphs keep working.
        """
        vector = [1.0] * len(self._names)
        unknown: list[str] = []
        for name, value in (costs or {}).items():
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise ConfigError(f"cost of node {name!r} must be a number, got {value!r}")
            if math.isnan(value) or math.isinf(value) or value < 0:
                raise ConfigError(f"cost of node {name!r} must be finite and >= 0, got {value!r}")
            index = self._index.get(name)
            if index is None:
                unknown.append(name)
            else:
                vector[index] = float(value)
        if unknown:
            shown = ", ".join(repr(name) for name in unknown)
            hint = did_you_mean(unknown[0], self._names) if len(unknown) == 1 else ""
            warn_from_caller(
                f"costs name nodes that are not in the DAG and are ignored: {shown}"
                + (hint if hint.startswith("; did you mean") else "")
            )
        return vector

    def remaining_path_costs(self, costs: Mapping[str, float] | None) -> list[float]:
        """For each node, the cost of the longest chain from it (included) to a leaf:
        the scheduling priority under cost hints."""
        cost = self.cost_vector(costs)
        remaining = cost[:]
        for i in reversed(self._topo):
            tail = 0.0
            for s in self._succs[i]:
                tail = max(tail, remaining[s])
            remaining[i] = cost[i] + tail
        return remaining


class DAGBuilder:
    """Collects nodes and edges; `build()` validates them and returns a `DAG`.

    `add_edge` creates the nodes it names, so a graph can be written as edges alone.
    A misspelt name then becomes a node of its own; `execute()` catches it, because
    every node needs a task and every task must name a node (with a "did you mean").
    """

    def __init__(self) -> None:
        self._names: list[str] = []
        self._index: dict[str, int] = {}
        # Nodes that only edges have named so far; `add_node` may still declare them.
        self._implicit: dict[str, tuple[str, str]] = {}
        self._edges: dict[tuple[str, str], EdgePredicate | None] = {}
        self._node_predicates: dict[str, NodePredicate] = {}

    def add_node(self, name: str, *, when: NodePredicate | None = None) -> DAGBuilder:
        if when is not None and not callable(when):
            raise GraphError(f"predicate of node {name!r} must be callable, got {when!r}")
        if name in self._implicit:
            # Declared after an edge already created it: keep its place, add the predicate.
            del self._implicit[name]
        else:
            self._declare(name)
        if when is not None:
            self._node_predicates[name] = when
        return self

    def _declare(self, name: str) -> None:
        if not isinstance(name, str) or not name:
            raise GraphError(f"node names must be non-empty strings, got {name!r}")
        if name in self._index:
            raise DuplicateNodeError(name)
        self._index[name] = len(self._names)
        self._names.append(name)

    def add_nodes(self, names: Iterable[str]) -> DAGBuilder:
        if isinstance(names, str):
            raise GraphError(f"add_nodes() takes an iterable of names, got the string {names!r}")
        for name in names:
            self.add_node(name)
        return self

    def add_edge(
        self, source: str, target: str, *, when: EdgePredicate | None = None
    ) -> DAGBuilder:
        """`target` runs after `source` completes; either node is created if new.
        A repeated edge is kept once."""
        if source == target:
            raise SelfLoopError(source)
        if when is not None and not callable(when):
            raise GraphError(f"predicate of edge {source!r} -> {target!r} must be callable")
        for name in (source, target):
            if name not in self._index:
                self._declare(name)
                self._implicit[name] = (source, target)
        key = (source, target)
        if when is not None or key not in self._edges:
            self._edges[key] = when
        return self

    def add_edges(self, edges: Iterable[tuple[str, str]]) -> DAGBuilder:
        for edge in edges:
            if not isinstance(edge, tuple | list) or len(edge) != 2:
                raise GraphError(f"edges are (source, target) pairs, got {edge!r}")
            self.add_edge(edge[0], edge[1])
        return self

    def build(self) -> DAG:
        n = len(self._names)
        index = self._index
        preds: list[list[int]] = [[] for _ in range(n)]
        succs: list[list[int]] = [[] for _ in range(n)]
        edge_predicates: dict[tuple[int, int], EdgePredicate] = {}
        for (source, target), when in self._edges.items():
            s = index[source]
            t = index[target]
            preds[t].append(s)
            succs[s].append(t)
            if when is not None:
                edge_predicates[(s, t)] = when
        topo = _topological_order(preds, succs)
        if len(topo) < n:
            raise CycleError([self._names[i] for i in _find_cycle(preds, set(topo))])
        node_predicates = {index[k]: v for k, v in self._node_predicates.items()}
        return DAG(
            self._names,
            [tuple(p) for p in preds],
            [tuple(s) for s in succs],
            topo,
            node_predicates,
            edge_predicates,
            dict(self._implicit),
        )


def _topological_order(preds: Sequence[list[int]], succs: Sequence[list[int]]) -> list[int]:
    """Kahn's algorithm; nodes on or behind a cycle are left out."""
    indegree = [len(p) for p in preds]
    order = [i for i, d in enumerate(indegree) if d == 0]
    head = 0
    while head < len(order):
        for s in succs[order[head]]:
            indegree[s] -= 1
            if indegree[s] == 0:
                order.append(s)
        head += 1
    return order


def _find_cycle(preds: Sequence[list[int]], sorted_nodes: set[int]) -> list[int]:
    """Walk predecessors among the unsorted nodes until one repeats.

    Every node Kahn's algorithm could not sort has an unsorted predecessor, so the
    walk never gets stuck and must close a loop.
    """
    start = next(i for i in range(len(preds)) if i not in sorted_nodes)
    seen_at: dict[int, int] = {}
    walk: list[int] = []
    node = start
    while node not in seen_at:
        seen_at[node] = len(walk)
        walk.append(node)
        node = next(p for p in preds[node] if p not in sorted_nodes)
    loop = walk[seen_at[node] :]
    # The walk follows edges backwards; report them in the direction they point.
    loop.reverse()
    # Start at the node declared first, so the message does not depend on the walk.
    first = loop.index(min(loop))
    loop = loop[first:] + loop[:first]
    return [*loop, loop[0]]
