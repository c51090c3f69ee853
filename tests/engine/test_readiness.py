"""`Readiness` on its own, without an event loop: what is ready when, what each end
releases, skips or stops, fan-out children, and every call it must refuse."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from dagloop import DAG
from dagloop.engine.readiness import (
    CANCELLED,
    COMPLETED,
    FAILED,
    PENDING,
    RUNNING,
    SKIPPED,
    TIMED_OUT,
    Readiness,
    StopReason,
)
from dagloop.engine.results import NodeStatus


class Run:
    """A readiness over named nodes plus a log of everything it reported."""

    def __init__(
        self,
        nodes: Sequence[str],
        edges: Sequence[tuple[str, str]] = (),
        *,
        priorities: Sequence[float] | None = None,
        gate: Any = None,
        **options: Any,
    ) -> None:
        self.names = list(nodes)
        self.index = {name: i for i, name in enumerate(self.names)}
        preds: list[list[int]] = [[] for _ in self.names]
        succs: list[list[int]] = [[] for _ in self.names]
        for source, target in edges:
            preds[self.index[target]].append(self.index[source])
            succs[self.index[source]].append(self.index[target])
        #: ("reported", name, status, value, error) or ("decided", name, status), in order.
        self.events: list[tuple[Any, ...]] = []
        self.interrupts = 0
        self.all_settled = 0
        self.readiness = Readiness(
            preds,
            [tuple(s) for s in succs],
            priorities=priorities,
            gate=(lambda i: gate(self.names[i])) if gate is not None else None,
            on_reported=self._reported,
            on_decided=self._decided,
            on_interrupt=self._interrupted,
            on_all_settled=self._settled_all,
            **options,
        )

    def _reported(self, i: int, status: NodeStatus, value: Any, error: Any) -> None:
        self.events.append(("reported", self.names[i], status, value, error))

    def _decided(self, i: int, status: NodeStatus) -> None:
        self.events.append(("decided", self.names[i], status))

    def _interrupted(self) -> None:
        self.interrupts += 1

    def _settled_all(self) -> None:
        self.all_settled += 1

    def prepare(self) -> Run:
        self.readiness.prepare()
        return self

    def pop(self) -> str | None:
        index = self.readiness.pop_ready()
        return None if index is None else self.names[index]

    def pop_all(self) -> list[str]:
        popped = []
        while (name := self.pop()) is not None:
            popped.append(name)
        return popped

    def done(self, name: str, status: NodeStatus = COMPLETED, **outcome: Any) -> None:
        self.readiness.done(self.index[name], status, **outcome)

    def fan_out(self, parent: str, count: int) -> list[str]:
        # Named before fan_out(), which may already end them (after a stop).
        first = len(self.readiness)
        names = [f"{parent}[{position}]" for position in range(count)]
        self.names.extend(names)
        self.index.update({name: first + position for position, name in enumerate(names)})
        children = self.readiness.fan_out(self.index[parent], count)
        assert list(children) == list(range(first, first + count))
        assert len(self.readiness) == len(self.names)
        return names

    def status(self, name: str) -> NodeStatus:
        return self.readiness.status(self.index[name])

    def statuses(self) -> dict[str, NodeStatus]:
        return {name: self.status(name) for name in self.names}

    def settled(self) -> list[tuple[str, NodeStatus]]:
        """(name, status) of every event, in order."""
        return [(event[1], event[2]) for event in self.events]


DIAMOND = (["a", "b", "c", "d"], [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])


# -- what is ready when -------------------------------------------------------------------


def test_chain_releases_one_node_at_a_time() -> None:
    run = Run(["a", "b", "c"], [("a", "b"), ("b", "c")]).prepare()
    for name in ("a", "b", "c"):
        assert run.readiness.is_active()
        assert run.pop_all() == [name]
        assert run.status(name) is RUNNING
        run.done(name, value=name.upper())
    assert not run.readiness.is_active()
    assert run.pop() is None
    assert run.events == [
        ("reported", "a", COMPLETED, "A", None),
        ("reported", "b", COMPLETED, "B", None),
        ("reported", "c", COMPLETED, "C", None),
    ]
    assert run.all_settled == 1


def test_diamond_join_waits_for_both_branches() -> None:
    run = Run(*DIAMOND).prepare()
    assert run.pop_all() == ["a"]
    run.done("a")
    assert run.pop_all() == ["b", "c"]
    run.done("c")
    assert run.pop() is None
    assert run.status("d") is PENDING
    run.done("b")
    assert run.pop_all() == ["d"]
    run.done("d")
    assert run.statuses() == dict.fromkeys("abcd", COMPLETED)
    assert run.all_settled == 1


def test_without_priorities_ready_nodes_go_first_released_first_out() -> None:
    run = Run(["x", "a", "b", "c"], [("x", "c")]).prepare()
    assert run.pop() == "x"
    run.done("x")  # releases c behind the roots already queued
    assert run.pop_all() == ["a", "b", "c"]


def test_priorities_hand_out_the_longest_remaining_critical_path_first() -> None:
    names = ["short", "long_head", "long_tail", "medium"]
    edges = [("long_head", "long_tail")]
    dag = DAG.builder().add_nodes(names).add_edges(edges).build()
    costs = {"short": 1.0, "long_head": 1.0, "long_tail": 10.0, "medium": 5.0}
    priorities = dag.remaining_path_costs(costs)
    run = Run(names, edges, priorities=priorities).prepare()
    assert run.pop_all() == ["long_head", "medium", "short"]


def test_equal_priorities_go_in_node_order_and_a_newly_released_node_can_jump_the_queue() -> None:
    run = Run(["a", "b", "c", "d"], [("a", "d")], priorities=[3.0, 1.0, 1.0, 2.0]).prepare()
    assert run.pop() == "a"
    run.done("a")
    assert run.pop_all() == ["d", "b", "c"]


def test_a_node_without_dependencies_is_released_by_prepare_not_before() -> None:
    run = Run(["a"])
    with pytest.raises(ValueError, match=r"prepare\(\) must be called first"):
        run.pop()
    run.prepare()
    assert run.pop() == "a"


def test_an_empty_graph_is_never_active() -> None:
    run = Run([]).prepare()
    assert not run.readiness.is_active()
    assert run.pop() is None
    assert run.all_settled == 0


# -- failures -----------------------------------------------------------------------------


def test_best_effort_failure_skips_only_what_depends_on_it() -> None:
    run = Run(
        ["a", "b", "c", "x", "y"], [("a", "b"), ("b", "c"), ("x", "y")], fail_fast=False
    ).prepare()
    assert run.pop_all() == ["a", "x"]
    error = ValueError("boom")
    run.done("a", FAILED, error=error)
    assert run.readiness.stop_reason is None
    assert run.events == [
        ("reported", "a", FAILED, None, error),
        ("decided", "b", SKIPPED),
        ("decided", "c", SKIPPED),
    ]
    run.done("x")
    assert run.pop_all() == ["y"]
    run.done("y")
    assert not run.readiness.is_active()
    assert run.statuses() == {
        "a": FAILED,
        "b": SKIPPED,
        "c": SKIPPED,
        "x": COMPLETED,
        "y": COMPLETED,
    }


def test_skips_below_a_failure_go_depth_first_and_visit_each_node_once() -> None:
    run = Run(
        ["a", "b", "c", "d", "e"],
        [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d"), ("d", "e")],
        fail_fast=False,
    ).prepare()
    run.pop_all()
    run.done("a", FAILED, error=RuntimeError())
    assert run.settled() == [
        ("a", FAILED),
        ("c", SKIPPED),
        ("d", SKIPPED),
        ("e", SKIPPED),
        ("b", SKIPPED),
    ]


def test_a_node_with_one_failed_dependency_is_skipped_even_if_the_other_completes() -> None:
    run = Run(*DIAMOND, fail_fast=False).prepare()
    run.pop_all()
    run.done("a")
    assert run.pop_all() == ["b", "c"]
    run.done("b", FAILED, error=RuntimeError())
    assert run.status("d") is SKIPPED
    run.done("c")
    assert run.pop() is None
    assert run.settled() == [("a", COMPLETED), ("b", FAILED), ("d", SKIPPED), ("c", COMPLETED)]


def test_fail_fast_failure_skips_every_pending_node_but_lets_running_ones_finish() -> None:
    run = Run(["a", "b", "x", "y", "z"], [("a", "b"), ("x", "y")]).prepare()
    assert run.pop() == "a"
    assert run.pop() == "x"  # z stays queued
    run.done("a", FAILED, error=RuntimeError())
    assert run.readiness.stop_reason == "fail_fast"
    assert run.settled() == [("a", FAILED), ("b", SKIPPED), ("y", SKIPPED), ("z", SKIPPED)]
    assert run.status("x") is RUNNING
    assert run.interrupts == 0
    assert run.pop() is None
    run.done("x")  # a running node still ends as it ends
    assert run.status("x") is COMPLETED
    assert not run.readiness.is_active()
    assert run.all_settled == 1


def test_fail_fast_after_a_stop_releases_nothing_more() -> None:
    run = Run(["a", "x", "y"], [("x", "y")]).prepare()
    run.pop_all()
    run.done("a", FAILED, error=RuntimeError())
    assert run.status("y") is SKIPPED
    run.done("x")
    assert run.pop() is None
    assert run.settled()[-1] == ("x", COMPLETED)


def test_fail_fast_with_interrupt_cancels_running_nodes_too() -> None:
    run = Run(["a", "x", "y"], [("x", "y")], interrupt_on_failure=True).prepare()
    run.pop_all()
    run.done("a", TIMED_OUT, error=TimeoutError())
    assert run.settled() == [("a", TIMED_OUT), ("y", SKIPPED), ("x", CANCELLED)]
    assert run.interrupts == 1
    assert not run.readiness.is_active()


def test_timed_out_through_done_behaves_like_a_failure() -> None:
    run = Run(["a", "b"], [("a", "b")], fail_fast=False).prepare()
    run.pop_all()
    run.done("a", TIMED_OUT, error=TimeoutError())
    assert run.settled() == [("a", TIMED_OUT), ("b", SKIPPED)]


# -- gates --------------------------------------------------------------------------------


def test_a_gate_is_asked_once_a_node_is_released_and_can_skip_it() -> None:
    asked: list[str] = []

    def gate(name: str) -> bool:
        asked.append(name)
        return name != "b"

    run = Run(["a", "b", "c", "d"], [("a", "b"), ("b", "c"), ("a", "d")], gate=gate).prepare()
    assert asked == ["a"]
    run.pop_all()
    run.done("a")
    assert asked == ["a", "b", "d"]
    assert run.settled() == [("a", COMPLETED), ("b", SKIPPED), ("c", SKIPPED)]
    assert run.readiness.stop_reason is None  # a skip is no failure, even under fail-fast
    assert run.pop_all() == ["d"]


def test_a_gate_that_raises_fails_the_node_with_that_error() -> None:
    error = LookupError("no such key")

    def gate(name: str) -> bool:
        if name == "b":
            raise error
        return True

    run = Run(["a", "b", "c", "x"], [("a", "b"), ("b", "c")], gate=gate).prepare()
    assert run.pop() == "a"
    run.done("a")
    assert run.events[1] == ("reported", "b", FAILED, None, error)
    assert run.settled()[2:] == [("c", SKIPPED), ("x", SKIPPED)]
    assert run.readiness.stop_reason == "fail_fast"


# -- stops and the deadline ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("reason", "not_started"),
    [("cancel_event", CANCELLED), ("fail_fast", SKIPPED), ("timeout", SKIPPED)],
)
def test_a_stop_ends_nodes_that_did_not_start(reason: StopReason, not_started: NodeStatus) -> None:
    run = Run(["a", "b", "c"], [("a", "b")]).prepare()
    assert run.pop() == "a"
    run.readiness.stop(reason)
    assert run.readiness.stop_reason == reason
    assert run.settled() == [("b", not_started), ("c", not_started)]
    assert run.status("a") is RUNNING
    assert run.pop() is None
    run.done("a")
    assert run.status("a") is COMPLETED
    assert run.interrupts == 0


def test_the_first_stop_reason_stays() -> None:
    run = Run(["a", "b"]).prepare()
    run.readiness.stop("cancel_event")
    run.readiness.stop("fail_fast")
    assert run.readiness.stop_reason == "cancel_event"
    assert run.settled() == [("a", CANCELLED), ("b", CANCELLED)]


def test_abort_fails_the_node_and_cancels_everything_else() -> None:
    run = Run(["a", "b", "x", "y"], [("a", "b")]).prepare()
    assert [run.pop(), run.pop()] == ["a", "x"]
    interrupt = KeyboardInterrupt()
    run.readiness.abort(run.index["x"], interrupt)
    assert run.events[0] == ("reported", "x", FAILED, None, interrupt)
    assert run.readiness.stop_reason == "fatal"
    assert run.settled()[1:] == [("b", CANCELLED), ("y", CANCELLED), ("a", CANCELLED)]
    assert run.interrupts == 1
    assert not run.readiness.is_active()


def test_expire_times_out_running_nodes_and_skips_the_rest() -> None:
    run = Run(["a", "b", "c"], [("a", "b")]).prepare()
    assert run.pop() == "a"
    run.readiness.expire()
    assert run.readiness.deadline_passed
    assert run.readiness.stop_reason == "timeout"
    assert run.settled() == [("a", TIMED_OUT), ("b", SKIPPED), ("c", SKIPPED)]
    assert run.events[0] == ("decided", "a", TIMED_OUT)
    assert run.interrupts == 1
    assert run.all_settled == 1


def test_expire_after_a_stop_with_nothing_left_does_nothing() -> None:
    run = Run(["a"]).prepare()
    run.pop()
    run.done("a", FAILED, error=RuntimeError())
    run.readiness.expire()
    assert run.readiness.stop_reason == "fail_fast"
    assert run.interrupts == 0
    assert run.settled() == [("a", FAILED)]


def test_expire_keeps_an_earlier_stop_reason_but_still_times_out_running_nodes() -> None:
    run = Run(["a", "x"]).prepare()
    run.pop_all()
    run.done("a", FAILED, error=RuntimeError())
    run.readiness.expire()
    assert run.readiness.stop_reason == "fail_fast"
    assert run.settled() == [("a", FAILED), ("x", TIMED_OUT)]
    assert run.interrupts == 1


# -- fan-out ------------------------------------------------------------------------------


def test_fan_out_children_run_and_their_parent_completes_after_the_last() -> None:
    run = Run(["p", "after"], [("p", "after")]).prepare()
    assert run.pop() == "p"
    children = run.fan_out("p", 3)
    assert children == ["p[0]", "p[1]", "p[2]"]
    assert run.readiness.children(run.index["p"]) == [run.index[c] for c in children]
    assert run.readiness.parent(run.index["p[1]"]) == run.index["p"]
    assert run.readiness.parent(run.index["p"]) is None
    assert run.pop_all() == children
    for child in children:
        assert run.status("p") is RUNNING
        run.done(child, value=child)
    assert run.events[-1] == ("decided", "p", COMPLETED)
    assert run.pop_all() == ["after"]


def test_fan_out_of_nothing_completes_the_parent_at_once() -> None:
    run = Run(["p", "after"], [("p", "after")]).prepare()
    run.pop()
    assert run.fan_out("p", 0) == []
    assert run.settled() == [("p", COMPLETED)]
    assert run.pop_all() == ["after"]


def test_a_failed_child_fails_its_parent_once_all_children_are_done() -> None:
    run = Run(["p", "after"], [("p", "after")], fail_fast=False).prepare()
    run.pop()
    children = run.fan_out("p", 3)
    run.pop_all()
    run.done(children[1], FAILED, error=RuntimeError())
    run.done(children[2], TIMED_OUT, error=TimeoutError())
    assert run.status("p") is RUNNING
    run.done(children[0])
    assert run.readiness.first_failed_child(run.index["p"]) == run.index[children[1]]
    assert run.settled()[-2:] == [("p", FAILED), ("after", SKIPPED)]


def test_fail_fast_in_a_child_skips_its_queued_siblings_and_then_fails_the_parent() -> None:
    run = Run(["p", "after"], [("p", "after")]).prepare()
    run.pop()
    children = run.fan_out("p", 3)
    assert run.pop() == children[0]
    run.done(children[0], FAILED, error=RuntimeError())
    assert run.settled() == [
        ("p[0]", FAILED),
        ("after", SKIPPED),
        ("p[1]", SKIPPED),
        ("p[2]", SKIPPED),
        ("p", FAILED),
    ]


def test_children_inherit_their_parents_priority() -> None:
    run = Run(["p", "low", "high"], priorities=[5.0, 1.0, 9.0]).prepare()
    assert run.pop() == "high"
    assert run.pop() == "p"
    run.fan_out("p", 2)
    assert run.pop_all() == ["p[0]", "p[1]", "low"]


@pytest.mark.parametrize(("reason", "ends"), [("fail_fast", SKIPPED), ("cancel_event", CANCELLED)])
def test_a_fan_out_after_a_stop_ends_its_children_and_parent_unstarted(
    reason: StopReason, ends: NodeStatus
) -> None:
    run = Run(["p"]).prepare()
    run.pop()
    run.readiness.stop(reason)
    run.fan_out("p", 2)
    assert run.settled() == [("p[0]", ends), ("p[1]", ends), ("p", ends)]
    assert not run.readiness.is_active()


def test_expire_times_out_children_before_their_parent() -> None:
    run = Run(["p"]).prepare()
    run.pop()
    children = run.fan_out("p", 2)
    assert run.pop() == children[0]
    run.readiness.expire()
    assert run.settled() == [("p[0]", TIMED_OUT), ("p", TIMED_OUT), ("p[1]", SKIPPED)]


def test_expire_with_every_child_running_times_out_the_parent_through_its_children() -> None:
    run = Run(["p"]).prepare()
    run.pop()
    run.fan_out("p", 2)
    run.pop_all()
    run.readiness.expire()
    assert run.events == [
        ("decided", "p[1]", TIMED_OUT),
        ("decided", "p[0]", TIMED_OUT),
        ("decided", "p", TIMED_OUT),
    ]


def test_nested_fan_out() -> None:
    run = Run(["p"]).prepare()
    run.pop()
    (child,) = run.fan_out("p", 1)
    assert run.pop() == child
    grandchildren = run.fan_out(child, 2)
    assert run.pop_all() == grandchildren
    for grandchild in grandchildren:
        run.done(grandchild)
    assert run.settled()[-2:] == [(child, COMPLETED), ("p", COMPLETED)]
    assert not run.readiness.is_active()


# -- complete_if_running: how the engine reports a completion -------------------------------


def _complete_one_at_a_time(run: Run, *, through_done: bool) -> list[str]:
    """Hand out nodes one by one and complete each at once, until none is ready."""
    handed_out = []
    while (name := run.pop()) is not None:
        handed_out.append(name)
        if through_done:
            run.done(name, value=name.upper())
        else:
            assert run.readiness.complete_if_running(run.index[name], name.upper()) is True
    return handed_out


WIDE = (["a", "b", "c", "d", "e"], [("a", "c"), ("b", "c"), ("a", "d"), ("c", "d")])


@pytest.mark.parametrize("variant", ["fifo", "priorities", "gate", "best-effort"])
@pytest.mark.parametrize("graph", [DIAMOND, WIDE], ids=["diamond", "wide"])
def test_complete_if_running_behaves_like_done_completed(
    graph: tuple[list[str], list[tuple[str, str]]], variant: str
) -> None:
    nodes, edges = graph
    options: dict[str, Any] = {
        "fifo": {},
        "priorities": {"priorities": [float(i % 3) for i in range(len(nodes))]},
        "gate": {"gate": lambda name: name != "c"},
        "best-effort": {"fail_fast": False},
    }[variant]
    by_done = Run(nodes, edges, **options).prepare()
    by_complete = Run(nodes, edges, **options).prepare()
    assert _complete_one_at_a_time(by_done, through_done=True) == _complete_one_at_a_time(
        by_complete, through_done=False
    )
    assert by_complete.events == by_done.events
    assert by_complete.statuses() == by_done.statuses()
    assert by_complete.all_settled == by_done.all_settled == 1


def test_complete_if_running_of_the_last_child_completes_its_parent() -> None:
    run = Run(["p", "after"], [("p", "after")]).prepare()
    run.pop()
    children = run.fan_out("p", 2)
    assert run.pop_all() == children
    for child in children:
        assert run.readiness.complete_if_running(run.index[child], child) is True
    assert run.settled()[-1] == ("p", COMPLETED)
    assert run.pop_all() == ["after"]


@pytest.mark.parametrize("end", ["expire", "fatal stop"])
def test_complete_if_running_leaves_a_node_readiness_already_ended_as_it_is(end: str) -> None:
    run = Run(["a", "b"], [("a", "b")]).prepare()
    assert run.pop() == "a"
    if end == "expire":
        run.readiness.expire()
    else:
        run.readiness.stop("fatal")
    events = list(run.events)
    assert run.readiness.complete_if_running(run.index["a"], "late") is False
    assert run.events == events
    assert run.status("a") is (TIMED_OUT if end == "expire" else CANCELLED)
    assert run.status("b") is (SKIPPED if end == "expire" else CANCELLED)


def test_complete_if_running_of_a_fanned_out_parent_is_refused() -> None:
    run = Run(["p"]).prepare()
    run.pop()
    run.fan_out("p", 1)
    with pytest.raises(ValueError, match="fanned out: it ends when its children are done"):
        run.readiness.complete_if_running(run.index["p"], None)
    assert run.status("p") is RUNNING


# -- illegal calls ------------------------------------------------------------------------


def test_prepare_twice_is_refused() -> None:
    run = Run(["a"]).prepare()
    with pytest.raises(ValueError, match=r"cannot prepare\(\) more than once"):
        run.readiness.prepare()


def test_done_before_prepare_is_refused() -> None:
    run = Run(["a"])
    with pytest.raises(ValueError, match=r"prepare\(\) must be called first"):
        run.done("a")


@pytest.mark.parametrize("index", [-1, 2, 10])
def test_done_of_an_unknown_node_is_refused(index: int) -> None:
    run = Run(["a", "b"]).prepare()
    with pytest.raises(ValueError, match=f"node {index} is not a node of this graph"):
        run.readiness.done(index, COMPLETED)
    with pytest.raises(ValueError, match="is not a node of this graph"):
        run.readiness.status(index)


def test_done_of_a_waiting_or_a_queued_node_is_refused() -> None:
    run = Run(["a", "b", "c"], [("a", "b")]).prepare()
    assert run.pop() == "a"
    for name in ("b", "c"):  # b waits for a, c is queued but not handed out
        with pytest.raises(ValueError, match=r"was not handed out by pop_ready\(\)"):
            run.done(name)
        assert run.status(name) is PENDING
    assert run.pop() == "c"


def test_done_twice_is_refused() -> None:
    run = Run(["a"]).prepare()
    run.pop()
    run.done("a")
    with pytest.raises(ValueError, match="already ended COMPLETED"):
        run.done("a", FAILED, error=RuntimeError())
    assert run.settled() == [("a", COMPLETED)]


def test_done_of_a_node_readiness_ended_is_refused() -> None:
    run = Run(["a", "b"], [("a", "b")], fail_fast=False).prepare()
    run.pop()
    run.done("a", FAILED, error=RuntimeError())
    with pytest.raises(ValueError, match="already ended SKIPPED"):
        run.done("b")


@pytest.mark.parametrize("status", [PENDING, RUNNING, SKIPPED, CANCELLED, NodeStatus.CACHE_HIT])
def test_done_with_a_status_readiness_decides_itself_is_refused(status: NodeStatus) -> None:
    run = Run(["a"]).prepare()
    run.pop()
    with pytest.raises(ValueError, match=r"done\(\) takes COMPLETED, FAILED or TIMED_OUT"):
        run.done("a", status)
    assert run.status("a") is RUNNING


def test_done_of_a_fanned_out_parent_is_refused() -> None:
    run = Run(["p"]).prepare()
    run.pop()
    run.fan_out("p", 1)
    with pytest.raises(ValueError, match="fanned out: it ends when its children are done"):
        run.done("p")


def test_fan_out_is_refused_unless_the_node_is_running_and_has_not_fanned_out() -> None:
    run = Run(["p", "q"]).prepare()
    readiness = run.readiness
    with pytest.raises(ValueError, match=r"fan_out\(\): node 0 was not handed out"):
        readiness.fan_out(0, 1)
    run.pop()
    with pytest.raises(ValueError, match="needs a count >= 0"):
        readiness.fan_out(0, -1)
    run.fan_out("p", 1)
    with pytest.raises(ValueError, match="already fanned out"):
        readiness.fan_out(0, 1)
    run.pop_all()
    run.done("q")
    with pytest.raises(ValueError, match=r"fan_out\(\): node 1 already ended COMPLETED"):
        readiness.fan_out(1, 1)
    assert len(readiness) == 3


def test_abort_of_a_node_that_is_not_running_is_refused() -> None:
    run = Run(["a"]).prepare()
    with pytest.raises(ValueError, match=r"abort\(\): node 0 was not handed out"):
        run.readiness.abort(0, KeyboardInterrupt())
    assert run.readiness.stop_reason is None


def test_an_unknown_stop_reason_is_refused() -> None:
    run = Run(["a"]).prepare()
    with pytest.raises(ValueError, match="unknown stop reason 'later'"):
        run.readiness.stop("later")  # type: ignore[arg-type]
    assert run.readiness.stop_reason is None


def test_graphs_whose_lists_disagree_are_refused() -> None:
    with pytest.raises(ValueError, match="one entry per node"):
        Readiness([()], [])
    with pytest.raises(ValueError, match="priorities must have one entry per node"):
        Readiness([()], [()], priorities=[1.0, 2.0])
