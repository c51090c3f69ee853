"""Property tests: random DAGs with random failures, timeouts, retries and cancellations.

Order is checked with a monotonic counter, never with wall-clock time.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from dagloop import AsyncDAGExecutor, NodeStatus, RetryPolicy, task

from .conftest import Clock, make_dag

BEHAVIOURS = ["async_ok", "sync_ok", "async_fail", "sync_fail", "flaky", "hang", "cancel"]
TERMINAL = {
    NodeStatus.COMPLETED,
    NodeStatus.FAILED,
    NodeStatus.SKIPPED,
    NodeStatus.TIMED_OUT,
    NodeStatus.CANCELLED,
}


@dataclass
class Scenario:
    names: list[str]
    edges: list[tuple[str, str]]
    behaviours: dict[str, str]
    retried: set[str]
    node_timeouts: set[str]
    fail_fast: bool
    max_concurrency: int | None
    global_timeout: float | None


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(1, 10))
    names = [f"n{i}" for i in range(n)]
    # Edges only go from a lower to a higher index, so the graph is acyclic.
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    chosen = draw(st.lists(st.sampled_from(pairs), unique=True, max_size=2 * n)) if pairs else []
    behaviours = {
        name: draw(
            st.sampled_from(BEHAVIOURS).filter(lambda b: b not in ("hang", "cancel"))
            | st.sampled_from(BEHAVIOURS)
        )
        for name in names
    }
    retried = {name for name in names if draw(st.booleans())}
    node_timeouts = {name for name in names if behaviours[name] == "hang" and draw(st.booleans())}
    has_unbounded_hang = any(
        b == "hang" and name not in node_timeouts for name, b in behaviours.items()
    )
    global_timeout = 0.05 if has_unbounded_hang else draw(st.sampled_from([None, None, 0.5]))
    return Scenario(
        names=names,
        edges=[(names[i], names[j]) for i, j in chosen],
        behaviours=behaviours,
        retried=retried,
        node_timeouts=node_timeouts,
        fail_fast=draw(st.booleans()),
        max_concurrency=draw(st.sampled_from([None, 1, 2, 3])),
        global_timeout=global_timeout,
    )


@dataclass
class Observed:
    clock: Clock = field(default_factory=Clock)
    lock: threading.Lock = field(default_factory=threading.Lock)
    starts: dict[str, int] = field(default_factory=dict)
    terminal_events: dict[str, list[str]] = field(default_factory=dict)
    completed_at: dict[str, int] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    running: int = 0
    peak: int = 0
    opened: int = 0
    closed: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    def enter(self, name: str) -> None:
        with self.lock:
            self.ran.add(name)
            self.running += 1
            self.peak = max(self.peak, self.running)

    def leave(self) -> None:
        with self.lock:
            self.running -= 1

    # Callbacks.
    def on_node_start(self, name: str) -> None:
        self.starts.setdefault(name, self.clock.tick())

    def _terminal(self, name: str, kind: str) -> None:
        self.terminal_events.setdefault(name, []).append(kind)

    def on_node_complete(self, name: str, result: Any) -> None:
        self.completed_at[name] = self.clock.tick()
        self._terminal(name, "complete")

    def on_node_error(self, name: str, error: BaseException) -> None:
        self._terminal(name, "error")

    def on_node_skip(self, name: str) -> None:
        self._terminal(name, "skip")

    def on_node_cancel(self, name: str) -> None:
        self._terminal(name, "cancel")


def build_task(name: str, behaviour: str, seen: Observed, cancel: asyncio.Event) -> Any:
    if behaviour.startswith("sync"):

        def sync_task(handle: str) -> str:
            seen.enter(name)
            try:
                if behaviour == "sync_fail":
                    raise RuntimeError(f"{name} failed")
                return handle
            finally:
                seen.leave()

        return sync_task

    async def async_task(handle: str) -> str:
        seen.enter(name)
        try:
            await asyncio.sleep(0)
            if behaviour == "async_fail":
                raise RuntimeError(f"{name} failed")
            if behaviour == "flaky":
                seen.failures[name] = seen.failures.get(name, 0) + 1
                if seen.failures[name] == 1:
                    raise ConnectionError(f"{name} flaked")
            if behaviour == "hang":
                await asyncio.sleep(30)
            if behaviour == "cancel":
                cancel.set()
            return handle
        finally:
            seen.leave()

    return async_task


def descendants(name: str, edges: list[tuple[str, str]]) -> set[str]:
    found: set[str] = set()
    stack = [name]
    while stack:
        current = stack.pop()
        for source, target in edges:
            if source == current and target not in found:
                found.add(target)
                stack.append(target)
    return found


async def run_scenario(scenario: Scenario) -> tuple[Any, Observed, int, int]:
    seen = Observed()
    cancel = asyncio.Event()

    @contextlib.asynccontextmanager
    async def handle() -> AsyncIterator[str]:
        seen.opened += 1
        try:
            yield "handle"
        finally:
            seen.closed += 1

    tasks: dict[str, Any] = {}
    for name in scenario.names:
        fn = build_task(name, scenario.behaviours[name], seen, cancel)
        tasks[name] = task(
            fn,
            name=name,
            retry=RetryPolicy(max_attempts=2) if name in scenario.retried else None,
            timeout=0.01 if name in scenario.node_timeouts else None,
        )
    dag = make_dag(scenario.names, scenario.edges)
    executor = AsyncDAGExecutor(
        dag,
        fail_fast=scenario.fail_fast,
        max_concurrency=scenario.max_concurrency,
        max_workers=2,
        callbacks=seen,
        resources={"handle": handle},
    )
    threads_before = threading.active_count()
    result = await executor.execute(tasks, timeout=scenario.global_timeout, cancel_event=cancel)
    leftover_tasks = len(asyncio.all_tasks() - {asyncio.current_task()})
    # A sync call a timeout cut off is abandoned, not waited for (on a loaded machine even
    # an instant one can still be queued then): it may finish after execute() returns,
    # but its thread must then exit, so no worker thread is left behind for good.
    deadline = time.monotonic() + 10
    while threading.active_count() > threads_before and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    threads_after = threading.active_count()
    assert threads_after <= threads_before, "a worker thread outlived execute()"
    return result, seen, leftover_tasks, threads_after


@settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(scenarios())
def test_engine_invariants(scenario: Scenario) -> None:
    result, seen, leftover_tasks, _ = asyncio.run(run_scenario(scenario))
    names = scenario.names
    preds = {n: [s for s, t in scenario.edges if t == n] for n in names}

    # Every node ends with exactly one terminal status and one terminal callback.
    assert set(result.node_results) == set(names)
    for name in names:
        assert result[name].status in TERMINAL, name
        assert len(seen.terminal_events.get(name, [])) == 1, (name, seen.terminal_events)
    counts = result.succeeded + result.failed + result.skipped + result.timed_out + result.cancelled
    assert counts == len(names)

    # No node started before all of its dependencies completed.
    for name, started in seen.starts.items():
        for pred in preds[name]:
            assert result[pred].status is NodeStatus.COMPLETED, (pred, name)
            assert seen.completed_at[pred] < started, (pred, name)

    # No descendant of a failed (or timed out) node ran.
    for name in names:
        if result[name].status in (NodeStatus.FAILED, NodeStatus.TIMED_OUT):
            assert not (descendants(name, scenario.edges) & seen.ran), name

    # A started node is never SKIPPED or CANCELLED before it ran, and vice versa.
    for name in names:
        status = result[name].status
        if status in (NodeStatus.SKIPPED, NodeStatus.CANCELLED):
            assert name not in seen.starts, name
        if status is NodeStatus.COMPLETED:
            assert name in seen.ran

    # The concurrency limit is never exceeded.
    if scenario.max_concurrency is not None:
        assert seen.peak <= scenario.max_concurrency

    # No task outlives execute; resources are opened and closed exactly once.
    assert leftover_tasks == 0
    assert (seen.opened, seen.closed) == (1, 1)


@settings(max_examples=60, deadline=None)
@given(
    scenarios().filter(lambda s: not any(b in ("hang", "cancel") for b in s.behaviours.values()))
)
def test_best_effort_outcome_is_exactly_predictable(scenario: Scenario) -> None:
    """Without time limits or cancellation, best-effort runs have one possible outcome."""
    scenario.fail_fast = False
    result, _, _, _ = asyncio.run(run_scenario(scenario))
    expected: dict[str, NodeStatus] = {}
    for name in scenario.names:  # names are in topological order by construction
        preds = [s for s, t in scenario.edges if t == name]
        behaviour = scenario.behaviours[name]
        if any(expected[p] is not NodeStatus.COMPLETED for p in preds):
            expected[name] = NodeStatus.SKIPPED
        elif behaviour.endswith("fail") or (behaviour == "flaky" and name not in scenario.retried):
            expected[name] = NodeStatus.FAILED
        else:
            expected[name] = NodeStatus.COMPLETED
    assert {n: r.status for n, r in result.node_results.items()} == expected
    for name in scenario.names:
        if expected[name] is NodeStatus.COMPLETED:
            assert result.value(name) == "handle"
            assert result[name].attempts == (2 if scenario.behaviours[name] == "flaky" else 1)
