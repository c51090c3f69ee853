"""What an execution returns: one `NodeResult` per node and totals by status."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .errors import NodeNotCompletedError, UnknownNodeError

if TYPE_CHECKING:
    from ..runtime.tracing import TraceRecorder


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


@dataclass(slots=True, eq=False)
class ExecutionResult:
    node_results: dict[str, NodeResult]
    total_duration_seconds: float
    trace: TraceRecorder | None = None
    _counts: dict[NodeStatus, int] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        counts = dict.fromkeys(NodeStatus, 0)
        for node in self.node_results.values():
            counts[node.status] += 1
        self._counts = counts

    def count(self, status: NodeStatus) -> int:
        return self._counts[status]

    @property
    def succeeded(self) -> int:
        return self._counts[NodeStatus.COMPLETED]

    @property
    def failed(self) -> int:
        return self._counts[NodeStatus.FAILED]

    @property
    def skipped(self) -> int:
        return self._counts[NodeStatus.SKIPPED]

    @property
    def timed_out(self) -> int:
        return self._counts[NodeStatus.TIMED_OUT]

    @property
    def cancelled(self) -> int:
        return self._counts[NodeStatus.CANCELLED]

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
        return {n: r.error for n, r in self.node_results.items() if r.error is not None}

    def __repr__(self) -> str:
        parts = [f"{s.name.lower()}={c}" for s, c in self._counts.items() if c]
        return f"<ExecutionResult {' '.join(parts)} in {self.total_duration_seconds:.3f}s>"
