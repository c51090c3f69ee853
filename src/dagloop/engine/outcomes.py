"""Recording each node's end: its `NodeResult` fields and its one terminal callback."""

from __future__ import annotations

import time
from typing import Any

from .binding import ArgumentValues
from .callbacks import CallbackDispatcher
from .errors import NodeTimeoutError
from .node_run import NodeRun
from .readiness import Readiness
from .results import NodeStatus

# Module-level names: an enum member looked up on its class costs more than a global,
# and `reported` compares against them once per node.
COMPLETED = NodeStatus.COMPLETED
FAILED = NodeStatus.FAILED
SKIPPED = NodeStatus.SKIPPED
TIMED_OUT = NodeStatus.TIMED_OUT


class OutcomeRecorder:
    """The listener of a run's `Readiness`.

    Readiness reports every terminal status in the order it happens; this fills in the
    node's record, keeps completed values for the calls that receive them, notes the
    order of failures and fires the node's one terminal callback.
    """

    def __init__(
        self,
        nodes: list[NodeRun],
        values: ArgumentValues,
        callbacks: CallbackDispatcher,
        timeout: float | None,
    ) -> None:
        self._nodes = nodes
        # The same list as `values.results`: fan-out only ever appends to it.
        self._results = values.results
        self._callbacks = callbacks
        self._timeout = timeout
        self._readiness: Readiness | None = None
        #: Names of FAILED and TIMED_OUT nodes, in the order they ended.
        self.failure_order: list[str] = []

    def attach(self, readiness: Readiness) -> None:
        """The readiness this recorder listens to, asked about fan-out children."""
        self._readiness = readiness

    def decided(self, index: int, status: NodeStatus) -> None:
        """Readiness ended a node on its own: a fan-out parent takes its children's values
        or its first failed child's error, a node caught by the execution timeout gets a
        `NodeTimeoutError`, a skipped or cancelled one nothing."""
        node = self._nodes[index]
        value: Any = None
        error: BaseException | None = None
        if status is TIMED_OUT:
            error = NodeTimeoutError(node.name, self._timeout or 0.0, "execution")
        elif status is COMPLETED or status is FAILED:
            readiness = self._readiness
            assert readiness is not None, "attach() the readiness first"
            if status is COMPLETED:
                results = self._results
                value = [results[child] for child in readiness.children(index) or ()]
            else:
                child = readiness.first_failed_child(index)
                error = self._nodes[child].error if child is not None else None
        self.reported(index, status, value, error)

    def reported(
        self, index: int, status: NodeStatus, value: Any, error: BaseException | None
    ) -> None:
        """A node ended as the scheduler reported it (or as `decided` worked out)."""
        node = self._nodes[index]
        started = node.started
        if started is not None:
            node.duration_seconds = time.perf_counter() - started
        node.status = status
        node.error = error
        callbacks = self._callbacks
        if status is COMPLETED:
            self._results[index] = value
            node.result = value
            if callbacks.node_complete:
                callbacks.emit(callbacks.node_complete, node.name, value)
        elif status is FAILED or status is TIMED_OUT:
            self.failure_order.append(node.name)
            if callbacks.node_error:
                callbacks.emit(callbacks.node_error, node.name, error)
        elif status is SKIPPED:
            if callbacks.node_skip:
                callbacks.emit(callbacks.node_skip, node.name)
        elif callbacks.node_cancel:
            callbacks.emit(callbacks.node_cancel, node.name)
