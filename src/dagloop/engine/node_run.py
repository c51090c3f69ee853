"""`NodeRun`: one node's result record, carrying what the scheduler needs to run it."""

from __future__ import annotations

from .binding import CallSpec
from .results import NodeResult, NodeStatus


class NodeRun(NodeResult):
    """Run state of one node (graph nodes and fan-out children alike).

    It is the node's `NodeResult` itself, with scheduling fields added, so finishing a
    run hands the records over instead of copying one per node. Readiness (waiting,
    ready, running, done) is not kept here but in `Readiness`; `status` is filled in
    when the node reaches a terminal status.
    """

    __slots__ = ("index", "spec", "started")

    def __init__(self, index: int, name: str, spec: CallSpec) -> None:
        self.name = name
        self.status = NodeStatus.PENDING
        self.result = None
        self.error = None
        self.duration_seconds = 0.0
        self.attempts = 0
        self.index = index
        self.spec = spec
        #: `time.perf_counter()` when the node started; None while it has not.
        self.started: float | None = None
