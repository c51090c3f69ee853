"""Which nodes of one run are waiting, ready, running and done: the engine's bookkeeping.

Synchronous and free of asyncio, in the spirit of `graphlib.TopologicalSorter`, so every
rule can be tested without an event loop. `prepare()` releases the roots, `pop_ready()`
hands out the next ready node (longest remaining critical path first when priorities
are given, otherwise first released first), `done()` records how a handed-out node
ended and releases, skips or stops what depends on it, `is_active()` says whether
anything is left.

Each node keeps a count of unfinished dependencies; when it reaches zero the node is
released at once, so there are no levels or waves. Nodes are integer indices; fan-out
children are appended after the graph's own nodes while the run goes on.

Every terminal status goes to a listener the moment it happens, so listeners see one
deterministic order: `on_reported` for an end the caller reported (with the value or
error it reported), `on_decided` for one readiness decided itself (a skip below a
failure, a stop, a fan-out parent whose children are all done, the deadline).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any, Literal

from .results import NodeStatus

PENDING = NodeStatus.PENDING
RUNNING = NodeStatus.RUNNING
COMPLETED = NodeStatus.COMPLETED
FAILED = NodeStatus.FAILED
SKIPPED = NodeStatus.SKIPPED
TIMED_OUT = NodeStatus.TIMED_OUT
CANCELLED = NodeStatus.CANCELLED

#: Why a run stopped starting nodes.
StopReason = Literal["fail_fast", "cancel_event", "timeout", "fatal"]
STOP_REASONS: tuple[StopReason, ...] = ("fail_fast", "cancel_event", "timeout", "fatal")

#: How a handed-out node may end through `done()`.
DONE_STATUSES = (COMPLETED, FAILED, TIMED_OUT)
_FANNED_OUT = "node {} fanned out: it ends when its children are done, not by {}"


#: `(index, status, value, error)`: a node ended as the caller reported through `done()`
#: or `abort()`, or FAILED because the caller's gate raised `error`. Readiness passes
#: value and error on without looking at them.
ReportedListener = Callable[[int, NodeStatus, Any, BaseException | None], object]
#: `(value, error)` the caller reported with a node's end, for the `ReportedListener`.
Report = tuple[Any, BaseException | None]
#: `(index, status)`: readiness decided this end itself. COMPLETED, FAILED or TIMED_OUT
#: of a fan-out parent whose children are all done; TIMED_OUT of a node running when
#: `expire()` came; SKIPPED or CANCELLED of a node below a failure or behind a stop.
DecidedListener = Callable[[int, NodeStatus], object]
#: Decides, when all of a node's dependencies completed, whether it runs (True) or is
#: SKIPPED (False); if it raises, the node FAILED with that error.
Gate = Callable[[int], bool]


class Readiness:
    """Dependency counting, the ready queue and terminal statuses of one run."""

    def __init__(
        self,
        preds: Sequence[Sequence[int]],
        succs: Sequence[tuple[int, ...]],
        *,
        fail_fast: bool = True,
        interrupt_on_failure: bool = False,
        priorities: Sequence[float] | None = None,
        gate: Gate | None = None,
        on_reported: ReportedListener | None = None,
        on_decided: DecidedListener | None = None,
        on_interrupt: Callable[[], object] | None = None,
        on_all_settled: Callable[[], object] | None = None,
    ) -> None:
        """`preds[i]`/`succs[i]`: the nodes node `i` depends on / that depend on it.

        fail_fast: a failure stops the run (nothing more starts) instead of only
            skipping what depends on it.
        interrupt_on_failure: a fail-fast stop also ends running nodes as CANCELLED
            (then `on_interrupt` is called so their work can be cancelled).
        on_all_settled: called when the last node reaches a terminal status.
        priorities: per node; when given, ready nodes are handed out highest first.
        """
        if len(preds) != len(succs):
            raise ValueError("preds and succs must have one entry per node")
        if priorities is not None and len(priorities) != len(preds):
            raise ValueError("priorities must have one entry per node")
        count = len(preds)
        self._succs: list[tuple[int, ...]] = list(succs)
        self._remaining = [len(p) for p in preds]
        self._status = [PENDING] * count
        self._parent = [-1] * count
        self._priority = list(priorities) if priorities is not None else None
        self._fail_fast = fail_fast
        self._interrupt_on_failure = interrupt_on_failure
        self._gate = gate
        #: Releasing a node is only appending it to the FIFO queue (until a stop).
        self._plain_release = gate is None and priorities is None
        self._on_reported = on_reported
        self._on_decided = on_decided
        self._on_interrupt = on_interrupt
        self._on_all_settled = on_all_settled
        self._queue: deque[int] = deque()
        self._heap: list[tuple[float, int]] = []
        self._children: dict[int, list[int]] = {}
        self._children_left: dict[int, int] = {}
        self._failed_child: dict[int, int] = {}
        self._unfinished = count
        self._stopping: StopReason | None = None
        self._deadline_passed = False
        self._prepared = False

    # -- queries ----------------------------------------------------------------------

    def __len__(self) -> int:
        """Number of nodes, fan-out children included."""
        return len(self._status)

    def status(self, index: int) -> NodeStatus:
        self._check_known(index)
        return self._status[index]

    def is_running(self, index: int) -> bool:
        return self._status[index] is RUNNING

    def is_active(self) -> bool:
        """True while some node has not reached a terminal status."""
        return self._unfinished > 0

    @property
    def stop_reason(self) -> StopReason | None:
        """Why the run stopped starting nodes, or None while it has not."""
        return self._stopping

    @property
    def deadline_passed(self) -> bool:
        return self._deadline_passed

    def running(self) -> list[int]:
        """Running nodes, fan-out children before their parents (children have larger
        indices), so a parent is still RUNNING when its children settle."""
        status = self._status
        return [index for index in range(len(status) - 1, -1, -1) if status[index] is RUNNING]

    def parent(self, index: int) -> int | None:
        parent = self._parent[index]
        return parent if parent >= 0 else None

    def children(self, index: int) -> list[int] | None:
        """The fan-out children of `index`, or None if it did not fan out."""
        return self._children.get(index)

    def first_failed_child(self, index: int) -> int | None:
        """The child of fan-out parent `index` that ended FAILED or TIMED_OUT first."""
        return self._failed_child.get(index)

    # -- driving ----------------------------------------------------------------------

    def prepare(self) -> None:
        """Release every node without dependencies."""
        if self._prepared:
            raise ValueError("cannot prepare() more than once")
        self._prepared = True
        remaining = self._remaining
        status = self._status
        if self._plain_release and self._stopping is None:
            # Nothing has started or stopped yet, so every node is PENDING.
            self._queue.extend([index for index, left in enumerate(remaining) if not left])
            return
        for index in range(len(status)):
            if remaining[index] == 0 and status[index] is PENDING:
                self._release(index)

    def pop_ready(self) -> int | None:
        """Hand out the next ready node, which becomes RUNNING, or None if none is ready
        (after a stop none ever is).

        One at a time rather than graphlib's whole batch: the caller starts nodes under
        a concurrency limit, and a node that finishes while being started may release
        one that must go before the rest of the queue.
        """
        if not self._prepared:
            raise ValueError("prepare() must be called first")
        status = self._status
        if self._priority is not None:
            heap = self._heap
            while heap:
                index = heapq.heappop(heap)[1]
                if status[index] is PENDING:  # it may have been skipped while it waited
                    break
            else:
                return None
        else:
            queue = self._queue
            while queue:
                index = queue.popleft()
                if status[index] is PENDING:
                    break
            else:
                return None
        status[index] = RUNNING
        return index

    def done(
        self, index: int, status: NodeStatus, value: Any = None, error: BaseException | None = None
    ) -> None:
        """A handed-out node ended COMPLETED, FAILED or TIMED_OUT.

        COMPLETED releases dependents whose dependencies are now all complete; any
        other end skips every pending node below it and, under fail-fast, stops the run.
        """
        self._check_running(index, "done()")
        if status not in DONE_STATUSES:
            raise ValueError(
                f"done() takes COMPLETED, FAILED or TIMED_OUT, got {status.name}; "
                "SKIPPED and CANCELLED are decided by readiness"
            )
        if index in self._children:
            raise ValueError(_FANNED_OUT.format(index, "done()"))
        self._finish(index, status, (value, error))

    def complete_if_running(self, index: int, value: Any = None) -> bool:
        """`done(index, COMPLETED, value)` for a caller whose work may end after readiness
        ended the node itself (the execution timeout, a stop that ends running nodes):
        then nothing changes and the answer is False.

        Every node the engine completes passes through here, so `_settle` and the usual
        case of `_release` are spelled out: a call layer per node shows in its overhead.
        """
        node_status = self._status
        if node_status[index] is not RUNNING:
            return False
        if index in self._children:
            raise ValueError(_FANNED_OUT.format(index, "complete_if_running()"))
        node_status[index] = COMPLETED
        self._unfinished -= 1
        if self._on_reported is not None:
            self._on_reported(index, COMPLETED, value, None)
        if not self._unfinished and self._on_all_settled is not None:
            self._on_all_settled()
        if self._parent[index] >= 0:
            self._child_settled(index, COMPLETED)
        remaining = self._remaining
        queue = self._queue
        plain = self._plain_release
        for successor in self._succs[index]:
            remaining[successor] -= 1
            if remaining[successor] == 0 and node_status[successor] is PENDING:
                if plain and self._stopping is None:
                    queue.append(successor)
                else:
                    self._release(successor)
        return True

    def abort(self, index: int, error: BaseException | None = None) -> None:
        """A handed-out node raised something that ends the whole run (KeyboardInterrupt,
        SystemExit): it FAILED, nothing below it is examined, and the run stops with
        running nodes CANCELLED."""
        self._check_running(index, "abort()")
        self._settle(index, FAILED, (None, error))
        self.stop("fatal")

    def fan_out(self, parent: int, count: int) -> range:
        """Running node `parent` turned into `count` children, appended as new nodes that
        depend on nothing and are released at once. The parent stays RUNNING until they
        are all done: then it is COMPLETED if they all completed, FAILED or TIMED_OUT
        with its first failed child, or SKIPPED/CANCELLED if the run stopped before some
        of them started. With no children it is COMPLETED at once."""
        self._check_running(parent, "fan_out()")
        if parent in self._children:
            raise ValueError(f"node {parent} already fanned out")
        if count < 0:
            raise ValueError(f"fan_out() needs a count >= 0, got {count}")
        first = len(self._status)
        children = range(first, first + count)
        self._children[parent] = list(children)
        self._children_left[parent] = count
        if not count:
            self._finish(parent, COMPLETED)
            return children
        self._unfinished += count
        self._status.extend([PENDING] * count)
        self._remaining.extend([0] * count)
        self._parent.extend([parent] * count)
        self._succs.extend([()] * count)
        if self._priority is not None:
            self._priority.extend([self._priority[parent]] * count)
        for child in children:
            self._release(child)
        return children

    def stop(self, reason: StopReason) -> None:
        """Start nothing more: every node not yet running ends SKIPPED, or CANCELLED when
        the user cancelled (`cancel_event`, `fatal`). A fatal stop, or a fail-fast one
        with `interrupt_on_failure`, also ends running nodes as CANCELLED and calls
        `on_interrupt`."""
        if reason not in STOP_REASONS:
            raise ValueError(f"unknown stop reason {reason!r}; expected one of {STOP_REASONS}")
        if self._stopping is None:
            self._stopping = reason
            self._end_pending(self._not_started_status())
        if reason == "fatal" or (reason == "fail_fast" and self._interrupt_on_failure):
            # The user wants out (KeyboardInterrupt, SystemExit), or builder style raises
            # the failure now: running work is cancelled instead of awaited.
            for index in self.running():
                if self._status[index] is RUNNING:
                    self._settle(index, CANCELLED)
            if self._on_interrupt is not None:
                self._on_interrupt()

    def expire(self) -> None:
        """The execution timeout passed: running nodes end TIMED_OUT, the rest SKIPPED,
        and `on_interrupt` is called so running work is cancelled. Nothing happens when
        the run had already stopped and every node is done."""
        self._deadline_passed = True
        if self._stopping is None:
            self._stopping = "timeout"
        elif self._unfinished == 0:
            return
        for index in self.running():
            if self._status[index] is RUNNING:
                self._settle(index, TIMED_OUT)
        self._end_pending(SKIPPED)
        if self._on_interrupt is not None:
            self._on_interrupt()

    # -- internals --------------------------------------------------------------------

    def _release(self, index: int) -> None:
        """Every dependency of `index` completed: check its gate, then queue it. Keep
        `prepare` and `complete_if_running`, which queue directly, in step."""
        if self._stopping is not None:
            self._settle(index, self._not_started_status())
            return
        gate = self._gate
        if gate is not None:
            try:
                allowed = gate(index)
            except Exception as exc:
                self._finish(index, FAILED, (None, exc))
                return
            if not allowed:
                self._finish(index, SKIPPED)
                return
        if self._priority is not None:
            heapq.heappush(self._heap, (-self._priority[index], index))
        else:
            self._queue.append(index)

    def _settle(self, index: int, status: NodeStatus, report: Report | None = None) -> None:
        """Record a terminal status and tell a listener (`on_reported` when the end comes
        with a `report`); nothing below it changes. Keep `complete_if_running` in step."""
        self._status[index] = status
        self._unfinished -= 1
        if report is not None:
            if self._on_reported is not None:
                self._on_reported(index, status, *report)
        elif self._on_decided is not None:
            self._on_decided(index, status)
        if not self._unfinished and self._on_all_settled is not None:
            self._on_all_settled()
        if self._parent[index] >= 0:
            self._child_settled(index, status)

    def _finish(self, index: int, status: NodeStatus, report: Report | None = None) -> None:
        """Settle `index`, then let the graph react: release or skip what depends on it."""
        self._settle(index, status, report)
        if status is COMPLETED:
            remaining = self._remaining
            node_status = self._status
            for successor in self._succs[index]:
                remaining[successor] -= 1
                if remaining[successor] == 0 and node_status[successor] is PENDING:
                    self._release(successor)
        elif status is not CANCELLED:
            self._skip_descendants(index)
            if status is not SKIPPED and self._fail_fast and self._stopping is None:
                self.stop("fail_fast")

    def _skip_descendants(self, start: int) -> None:
        """Iterative, and each node is visited at most once, so skipping below a failure
        stays linear however long the chain."""
        status = self._status
        succs = self._succs
        stack = list(succs[start])
        while stack:
            index = stack.pop()
            if status[index] is PENDING:
                self._settle(index, SKIPPED)
                stack.extend(succs[index])

    def _child_settled(self, child: int, status: NodeStatus) -> None:
        parent = self._parent[child]
        left = self._children_left[parent] - 1
        self._children_left[parent] = left
        if status in (FAILED, TIMED_OUT) and parent not in self._failed_child:
            self._failed_child[parent] = child
        if left or self._status[parent] is not RUNNING:
            return
        if self._deadline_passed:
            self._finish(parent, TIMED_OUT)
        elif parent in self._failed_child:
            self._finish(parent, FAILED)
        elif all(self._status[c] is COMPLETED for c in self._children[parent]):
            self._finish(parent, COMPLETED)
        else:
            # Some children never started because the run stopped.
            self._finish(parent, self._not_started_status())

    def _not_started_status(self) -> NodeStatus:
        """CANCELLED only when the user cancelled (cancel_event, KeyboardInterrupt);
        after a failure or the execution timeout a node that never started is SKIPPED."""
        return CANCELLED if self._stopping in ("cancel_event", "fatal") else SKIPPED

    def _end_pending(self, status: NodeStatus) -> None:
        """Empty the ready queue and end every node not yet handed out as `status`."""
        self._queue.clear()
        self._heap.clear()
        node_status = self._status
        for index in range(len(node_status)):
            if node_status[index] is PENDING:
                self._settle(index, status)

    def _check_known(self, index: int) -> None:
        if not 0 <= index < len(self._status):
            raise ValueError(f"node {index!r} is not a node of this graph")

    def _check_running(self, index: int, action: str) -> None:
        node_status = self._status
        if not (0 <= index < len(node_status) and node_status[index] is RUNNING):
            self._reject_not_running(index, action)

    def _reject_not_running(self, index: int, action: str) -> None:
        if not self._prepared:
            raise ValueError("prepare() must be called first")
        self._check_known(index)
        status = self._status[index]
        if status is PENDING:
            raise ValueError(f"{action}: node {index} was not handed out by pop_ready()")
        if status is not RUNNING:
            raise ValueError(f"{action}: node {index} already ended {status.name}")
