"""Resources, fan-out, predicates, callbacks, tracing and the progress bar."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import threading
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from rich.console import Console

from dagloop import (
    DAG,
    AsyncDAGExecutor,
    DAGExecutor,
    NodeStatus,
    RichProgress,
    TaskBindingError,
    fan_out,
    task,
)
from dagloop.runtime.tracing import LOOP

from .conftest import Recorder, make_dag

# -- resources -------------------------------------------------------------------------


class Pool:
    def __init__(self) -> None:
        self.open = True
        self.queries: list[str] = []


def tracked_resources() -> tuple[dict[str, Any], list[str]]:
    log: list[str] = []

    @contextlib.asynccontextmanager
    async def database() -> AsyncIterator[Pool]:
        pool = Pool()
        log.append("db open")
        try:
            yield pool
        finally:
            pool.open = False
            log.append("db close")

    @contextlib.contextmanager
    def settings() -> Iterator[dict[str, str]]:
        log.append("settings open")
        try:
            yield {"region": "eu"}
        finally:
            log.append("settings close")

    semaphore = asyncio.Semaphore(2)
    return {"db": database, "settings": settings, "sem": semaphore}, log


def test_resources_are_shared_entered_once_and_closed_once() -> None:
    resources, log = tracked_resources()
    dag = make_dag(["a", "b", "c"], [("a", "c"), ("b", "c")])
    seen: list[Any] = []

    async def a(db: Pool, sem: asyncio.Semaphore) -> str:
        async with sem:
            db.queries.append("a")
        seen.append(db)
        return "a"

    def b(db: Pool, settings: dict[str, str]) -> str:
        db.queries.append("b")
        seen.append(db)
        return settings["region"]

    async def c(a: str, b: str, db: Pool) -> str:
        seen.append(db)
        assert db.open
        return a + b

    result = DAGExecutor(dag, resources=resources).execute({"a": a, "b": b, "c": c})
    assert result.value("c") == "aeu"
    assert len({id(x) for x in seen}) == 1, "one pool shared by every task"
    assert sorted(seen[0].queries) == ["a", "b"]
    assert not seen[0].open
    assert sorted(log) == ["db close", "db open", "settings close", "settings open"]


@pytest.mark.parametrize("outcome", ["failure", "timeout", "cancel_event"])
def test_resources_close_exactly_once_whatever_the_outcome(outcome: str) -> None:
    resources, log = tracked_resources()
    dag = make_dag(["a", "b"], [("a", "b")])
    cancel = threading.Event()

    async def a(db: Pool) -> None:
        if outcome == "failure":
            raise RuntimeError("fail")
        if outcome == "cancel_event":
            cancel.set()
            await asyncio.sleep(0.05)
            return
        await asyncio.sleep(10)

    DAGExecutor(dag, resources=resources).execute(
        {"a": a, "b": lambda: None}, timeout=0.2, cancel_event=cancel
    )
    assert log.count("db open") == log.count("db close") == 1


def test_resources_close_when_execute_itself_is_cancelled() -> None:
    resources, log = tracked_resources()

    async def hang(db: Pool) -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        run = asyncio.create_task(
            AsyncDAGExecutor(make_dag("a"), resources=resources).execute({"a": hang})
        )
        await asyncio.sleep(0.05)
        run.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await run

    asyncio.run(main())
    assert log == ["db open", "settings open", "settings close", "db close"]


def test_plain_values_and_classes_as_resources() -> None:
    class Client:
        closed = 0

        async def __aenter__(self) -> Client:
            return self

        async def __aexit__(self, *exc: object) -> None:
            Client.closed += 1

    def a(config: dict[str, int], client: Client) -> int:
        assert isinstance(client, Client)
        return config["x"]

    result = DAGExecutor(make_dag("a"), resources={"config": {"x": 5}, "client": Client}).execute(
        {"a": a}
    )
    assert result.value("a") == 5
    assert Client.closed == 1


# -- fan-out ---------------------------------------------------------------------------


def test_fan_out_children_run_and_results_are_gathered_downstream() -> None:
    dag = make_dag(
        ["list_pages", "fetch_all", "total"], [("list_pages", "fetch_all"), ("fetch_all", "total")]
    )

    async def fetch_one(page: int, sem: asyncio.Semaphore) -> int:
        async with sem:
            await asyncio.sleep(0)
            return page * 10

    def list_pages() -> list[int]:
        return [1, 2, 3, 4]

    def fetch_all(list_pages: list[int]) -> Any:
        return fan_out(fetch_one, list_pages)

    def total(fetch_all: list[int]) -> int:
        return sum(fetch_all)

    recorder = Recorder()
    result = DAGExecutor(dag, resources={"sem": asyncio.Semaphore(2)}, callbacks=recorder).execute(
        {"list_pages": list_pages, "fetch_all": fetch_all, "total": total}
    )
    assert result.value("fetch_all") == [10, 20, 30, 40]
    assert result.value("total") == 100
    assert [result[f"fetch_all[{i}]"].status for i in range(4)] == [NodeStatus.COMPLETED] * 4
    assert result.succeeded == 7
    assert recorder.names("complete").index("fetch_all") > recorder.names("complete").index(
        "fetch_all[3]"
    )


def test_fan_out_over_nothing_completes_with_empty_list() -> None:
    def expand() -> Any:
        return fan_out(lambda item: item, [])

    assert DAGExecutor(make_dag(["expand"])).execute({"expand": expand}).value("expand") == []


def test_fan_out_child_failure_fails_parent_with_the_child_error() -> None:
    dag = make_dag(["expand", "after"], [("expand", "after")])
    boom = ValueError("item 2 is bad")

    def child(item: int) -> int:
        if item == 2:
            raise boom
        return item

    result = DAGExecutor(dag, fail_fast=False).execute(
        {"expand": lambda: fan_out(child, [1, 2, 3]), "after": lambda: None}
    )
    assert result["expand[1]"].status is NodeStatus.FAILED
    assert result["expand"].status is NodeStatus.FAILED
    assert result["expand"].error is boom
    assert result["after"].status is NodeStatus.SKIPPED
    assert result["expand[0]"].status is NodeStatus.COMPLETED


def test_fan_out_children_respect_max_concurrency_and_retries() -> None:
    running = 0
    peak = 0
    failures: dict[int, int] = {}

    async def child(item: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1
        if failures.setdefault(item, 0) == 0:
            failures[item] += 1
            raise ConnectionError("first attempt fails")
        return item

    result = DAGExecutor(make_dag(["expand"]), max_concurrency=3).execute(
        {"expand": lambda: fan_out(task(child, retry=1), range(10))}
    )
    assert result.value("expand") == list(range(10))
    assert peak == 3
    assert all(result[f"expand[{i}]"].attempts == 2 for i in range(10))


def test_fan_out_child_with_unsatisfiable_parameter_fails_the_parent() -> None:
    def child(item: int, missing: str) -> int:
        return item

    result = DAGExecutor(make_dag(["expand"])).execute({"expand": lambda: fan_out(child, [1])})
    assert result["expand"].status is NodeStatus.FAILED
    assert isinstance(result["expand"].error, TaskBindingError)
    assert "parameter 'missing'" in str(result["expand"].error)


def test_fan_out_under_global_timeout_marks_parent_timed_out() -> None:
    async def child(item: int) -> None:
        await asyncio.sleep(10)

    result = DAGExecutor(make_dag(["expand"])).execute(
        {"expand": lambda: fan_out(child, [1, 2])}, timeout=0.1
    )
    assert result["expand"].status is NodeStatus.TIMED_OUT
    assert result["expand[0]"].status is NodeStatus.TIMED_OUT


# -- predicates ------------------------------------------------------------------------


def test_node_predicate_false_skips_node_and_descendants(recorder: Recorder) -> None:
    dag = (
        DAG.builder()
        .add_node("check")
        .add_node("deploy", when=lambda up: up["check"] == "green")
        .add_node("notify")
        .add_node("audit")
        .add_edges([("check", "deploy"), ("deploy", "notify"), ("check", "audit")])
        .build()
    )
    result = DAGExecutor(dag, callbacks=recorder).execute(
        {"check": lambda: "red", "deploy": lambda: 1, "notify": lambda: 2, "audit": lambda: 3}
    )
    assert result["deploy"].status is NodeStatus.SKIPPED
    assert result["notify"].status is NodeStatus.SKIPPED
    assert result["audit"].status is NodeStatus.COMPLETED
    assert sorted(recorder.names("skip")) == ["deploy", "notify"]


def test_edge_predicate_selects_a_branch() -> None:
    dag = (
        DAG.builder()
        .add_nodes(["classify", "small", "large"])
        .add_edge("classify", "small", when=lambda size: size < 10)
        .add_edge("classify", "large", when=lambda size: size >= 10)
        .build()
    )
    result = DAGExecutor(dag).execute(
        {"classify": lambda: 42, "small": lambda: "s", "large": lambda: "l"}
    )
    assert result["small"].status is NodeStatus.SKIPPED
    assert result.value("large") == "l"


def test_task_predicate_and_a_raising_predicate() -> None:
    dag = make_dag(["a", "b", "c"], [("a", "b"), ("a", "c")])

    def broken(upstream: Any) -> bool:
        raise LookupError("predicate bug")

    result = DAGExecutor(dag, fail_fast=False).execute(
        {
            "a": lambda: 1,
            "b": task(lambda: "b", name="b", when=lambda up: up["a"] == 1),
            "c": task(lambda: "c", name="c", when=broken),
        }
    )
    assert result.value("b") == "b"
    assert result["c"].status is NodeStatus.FAILED
    assert isinstance(result["c"].error, LookupError)


# -- callbacks -------------------------------------------------------------------------


def test_callbacks_fire_once_per_event_in_order(recorder: Recorder) -> None:
    dag = make_dag(["a", "b"], [("a", "b")])
    DAGExecutor(dag, callbacks=recorder).execute({"a": lambda: 1, "b": lambda: 2})
    assert recorder.events == [
        ("execution_start", 2),
        ("start", "a"),
        ("complete", "a", 1),
        ("start", "b"),
        ("complete", "b", 2),
        ("execution_end",),
    ]


def test_async_callbacks_are_awaited_before_execute_returns() -> None:
    done: list[str] = []

    class AsyncCallbacks:
        async def on_node_complete(self, name: str, result: Any) -> None:
            await asyncio.sleep(0.01)
            done.append(name)

    DAGExecutor(make_dag("ab"), callbacks=[AsyncCallbacks()]).execute(
        {"a": lambda: 1, "b": lambda: 2}
    )
    assert sorted(done) == ["a", "b"]


def test_a_raising_callback_is_logged_and_does_not_break_the_run(
    caplog: pytest.LogCaptureFixture,
) -> None:
    class Broken:
        def on_node_start(self, name: str) -> None:
            raise RuntimeError("callback bug")

    result = DAGExecutor(make_dag("a"), callbacks=Broken()).execute({"a": lambda: 1})
    assert result.ok
    assert "callback" in caplog.text and "callback bug" in caplog.text


# -- tracing and progress ----------------------------------------------------------------


def test_tracing_records_every_attempt_and_exports_chrome_json(tmp_path: Any) -> None:
    dag = make_dag(["a", "b", "c"], [("a", "c"), ("b", "c")])
    calls: list[int] = []

    async def a() -> None:
        await asyncio.sleep(0.01)

    def b() -> None:
        calls.append(1)
        if len(calls) == 1:
            raise OSError("flaky")

    result = DAGExecutor(dag, enable_tracing=True, retries=1).execute(
        {"a": a, "b": b, "c": lambda: None}
    )
    assert result.trace is not None
    spans = result.trace.spans
    assert [(s.name, s.attempt, s.status) for s in spans if s.name == "b"] == [
        ("b", 1, "failed"),
        ("b", 2, "completed"),
    ]
    span_a = next(s for s in spans if s.name == "a")
    assert span_a.where == LOOP and span_a.end_ns > span_a.start_ns
    assert all(s.where.startswith("dagloop-worker") for s in spans if s.name in ("b", "c"))
    failed = next(s for s in spans if s.status == "failed")
    assert failed.error == "OSError: flaky"

    path = tmp_path / "trace.json"
    result.trace.save(path)
    data = json.loads(path.read_text())
    complete = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert len(complete) == 4
    assert {e["name"] for e in complete} == {"a", "b", "c"}
    assert all(e["dur"] >= 0 and "tid" in e and "pid" in e for e in complete)
    thread_names = [e["args"]["name"] for e in data["traceEvents"] if e["name"] == "thread_name"]
    assert LOOP in thread_names


def test_trace_spreads_overlapping_loop_spans_over_lanes() -> None:
    dag = make_dag(["x", "y", "z"])

    async def nap() -> None:
        await asyncio.sleep(0.02)

    result = DAGExecutor(dag, enable_tracing=True).execute({"x": nap, "y": nap, "z": nap})
    assert result.trace is not None
    events = [e for e in result.trace.to_chrome_trace()["traceEvents"] if e["ph"] == "X"]
    by_track: dict[int, list[dict[str, Any]]] = {}
    for event in events:
        by_track.setdefault(event["tid"], []).append(event)
    assert len(by_track) == 3, "three overlapping coroutines need three tracks"


def test_no_trace_unless_enabled() -> None:
    assert DAGExecutor(make_dag("a")).execute({"a": lambda: 1}).trace is None


def test_progress_bar_renders_with_rich() -> None:
    out = io.StringIO()
    progress = RichProgress("etl", console=Console(file=out, force_terminal=False, width=100))
    dag = make_dag(["a", "b", "c"], [("a", "b")])

    def fail() -> None:
        raise ValueError("x")

    DAGExecutor(dag, callbacks=progress, fail_fast=False).execute(
        {"a": lambda: 1, "b": lambda: 2, "c": fail}
    )
    text = out.getvalue()
    assert "etl" in text and "3/3" in text and "1 failed" in text


def test_progress_true_uses_rich_progress(monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[RichProgress] = []
    original_init = RichProgress.__init__

    def spy(self: RichProgress, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        created.append(self)

    monkeypatch.setattr(RichProgress, "__init__", spy)
    result = DAGExecutor(make_dag("a"), progress=True).execute({"a": lambda: 1})
    assert result.ok and len(created) == 1
