"""What an execution returns: one `NodeResult` per node and totals by status."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, overload

from .errors import ConfigError, NodeNotCompletedError, UnknownNodeError

if TYPE_CHECKING:
    from ..runtime.tracing import TraceRecorder
    from .graph import DAG


class NodeStatus(enum.Enum):
    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    SKIPPED = "skipped"
    TIMED_OUT = "timed-out"
    CANCELLED = "cancelled"
    #: Reserved for result caching; the engine itself never reports it.
    CACHE_HIT = "cache-hit"

    @property
    def is_terminal(self) -> bool:
        return self not in (NodeStatus.PENDING, NodeStatus.RUNNING)

    def __str__(self) -> str:
        # `print(node.status)` shows `FAILED`, as status tables and logs spell it.
        return self.name


@dataclass(slots=True, eq=False)
class NodeResult:
    """The outcome of one node. `error` is the original exception object the task raised
    (or a `NodeTimeoutError`); `attempts` counts calls of the task, retries included."""

    name: str
    status: NodeStatus = NodeStatus.PENDING
    result: Any = None
    error: BaseException | None = None
    duration_seconds: float = 0.0
    attempts: int = 0

    def __repr__(self) -> str:
        detail = f" error={self.error!r}" if self.error is not None else ""
        return f"<NodeResult {self.name!r} {self.status.name}{detail}>"


class _StatusCount(property):
    """A read-only property of `ExecutionResult`: how many nodes ended with `status`."""

    def __init__(self, status: NodeStatus) -> None:
        super().__init__()
        self.status = status

    @overload
    def __get__(self, result: None, owner: type | None = None) -> _StatusCount: ...
    @overload
    def __get__(self, result: ExecutionResult, owner: type | None = None) -> int: ...
    def __get__(self, result: ExecutionResult | None, owner: type | None = None) -> Any:
        return self if result is None else result.count(self.status)


@dataclass(slots=True, eq=False)
class ExecutionResult:
    """What `execute()` or `invoke()` returns.

    `dag` is the graph that ran (builder-style nodes check it, so a node cannot read
    another graph's result), `parameter` the argument of `invoke` (None for
    `execute`), `failure_order` the names of FAILED and TIMED_OUT nodes, first first.
    """

    node_results: dict[str, NodeResult]
    total_duration_seconds: float
    trace: TraceRecorder | None = None
    dag: DAG | None = None
    parameter: Any = None
    failure_order: list[str] = field(default_factory=list, repr=False)
    _counts: dict[NodeStatus, int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.node_results, dict):
            raise ConfigError(
                "ExecutionResult is made by execute() and invoke(); it takes a dict of "
                f"NodeResult by node name, got {self.node_results!r}"
            )
        counts = dict.fromkeys(NodeStatus, 0)
        for node in self.node_results.values():
            counts[node.status] += 1
        self._counts = counts

    def count(self, status: NodeStatus) -> int:
        return self._counts[status]

    succeeded = _StatusCount(NodeStatus.COMPLETED)
    failed = _StatusCount(NodeStatus.FAILED)
    skipped = _StatusCount(NodeStatus.SKIPPED)
    timed_out = _StatusCount(NodeStatus.TIMED_OUT)
    cancelled = _StatusCount(NodeStatus.CANCELLED)

    @property
    def ok(self) -> bool:
        """True when every node completed."""
        return self.succeeded + self._counts[NodeStatus.CACHE_HIT] == len(self.node_results)

    def __getitem__(self, name: str) -> NodeResult:
        try:
            return self.node_results[name]
        except KeyError:
            raise UnknownNodeError(name, "ExecutionResult lookup", self.node_results) from None

    def value(self, name: str) -> Any:
        """The return value of node `name`; raises if it did not complete."""
        node = self[name]
        if node.status not in (NodeStatus.COMPLETED, NodeStatus.CACHE_HIT):
            raise NodeNotCompletedError(
                f"node {name!r} has no result: it ended {node.status.name}"
                + (f" with {node.error!r}" if node.error is not None else "")
            ) from node.error
        return node.result

    def errors(self) -> Mapping[str, BaseException]:
        """The error of every node that has one: failures in the order they happened,
        then any other node carrying an error."""
        found: dict[str, BaseException] = {}
        for name in self.failure_order:
            error = self.node_results[name].error
            if error is not None:
                found[name] = error
        for name, node in self.node_results.items():
            if node.error is not None and name not in found:
                found[name] = node.error
        return found

    def __repr__(self) -> str:
        parts = [f"{s.name.lower()}={c}" for s, c in self._counts.items() if c]
        return f"<ExecutionResult {' '.join(parts)} in {self.total_duration_seconds:.3f}s>"
