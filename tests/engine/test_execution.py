"""Execution semantics of AsyncDAGExecutor and DAGExecutor over mapping-style tasks."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import pytest

from dagloop import (
    DAG,
    AsyncDAGExecutor,
    DAGExecutor,
    NodeStatus,
    NodeTimeoutError,
    RetryPolicy,
    task,
)

from .conftest import Clock, Recorder, make_dag

DIAMOND = make_dag("abcd", [("a", "b"), ("a", "c"), ("b", "d"), ("c", "d")])


def test_mixed_sync_and_async_tasks_receive_upstream_results_by_name() -> None:
    async def a() -> int:
        return 1

    def b(a: int) -> int:
        return a + 1

    async def c(a: int) -> int:
        return a * 10

    def d(b: int, c: int) -> int:
        return b + c

    result = DAGExecutor(DIAMOND).execute({"a": a, "b": b, "c": c, "d": d})
    assert result.ok and result.succeeded == 4
    assert result.value("d") == 12
    assert result["b"].result == 2
    assert all(r.attempts == 1 for r in result.node_results.values())
    assert result.total_duration_seconds > 0


def test_async_execute_on_the_running_loop() -> None:
    loop_ids: list[int] = []

    async def on_loop() -> str:
        loop_ids.append(id(asyncio.get_running_loop()))
        return "x"

    async def main() -> Any:
        loop_ids.append(id(asyncio.get_running_loop()))
        return await AsyncDAGExecutor(make_dag("a")).execute({"a": on_loop})

    result = asyncio.run(main())
    assert result.value("a") == "x"
    assert loop_ids[0] == loop_ids[1]


def test_sync_tasks_run_in_worker_threads_not_on_the_loop() -> None:
    threads: dict[str, str] = {}

    def where(name: str) -> Any:
        def record() -> None:
            threads[name] = threading.current_thread().name

        return record

    DAGExecutor(make_dag("ab")).execute({"a": where("a"), "b": where("b")})
    assert all(name.startswith("dagloop-worker") for name in threads.values())


def test_node_starts_as_soon_as_its_own_dependencies_finish(clock: Clock) -> None:
    """b depends only on a; it must start before the unrelated slow node s finishes."""
    dag = make_dag(["a", "b", "s"], [("a", "b")])
    release_slow = asyncio.Event
    stamps: dict[str, int] = {}

    async def main() -> Any:
        gate = release_slow()

        async def a() -> None:
            stamps["a_end"] = clock.tick()

        async def b() -> None:
            stamps["b_start"] = clock.tick()
            gate.set()

        async def s() -> None:
            await gate.wait()
            stamps["s_end"] = clock.tick()

        return await AsyncDAGExecutor(dag).execute({"a": a, "b": b, "s": s}, timeout=10)

    assert asyncio.run(main()).ok
    assert stamps["a_end"] < stamps["b_start"] < stamps["s_end"]


def test_fail_fast_skips_descendants_and_every_other_unstarted_node(recorder: Recorder) -> None:
    dag = make_dag(
        ["bad", "child", "grandchild", "later"], [("bad", "child"), ("child", "grandchild")]
    )
    error = RuntimeError("boom")

    async def bad() -> None:
        raise error

    async def never() -> None:
        raise AssertionError("must not run")

    async def main() -> Any:
        executor = AsyncDAGExecutor(dag, max_concurrency=1, callbacks=recorder)
        return await executor.execute(
            {"bad": bad, "child": never, "grandchild": never, "later": never}
        )

    result = asyncio.run(main())
    assert result["bad"].status is NodeStatus.FAILED
    assert result["bad"].error is error  # the original exception object
    assert result["child"].status is NodeStatus.SKIPPED
    assert result["grandchild"].status is NodeStatus.SKIPPED
    # Not started because the run stopped at a failure: SKIPPED. CANCELLED is only for
    # a cancellation the user asked for (cancel_event).
    assert result["later"].status is NodeStatus.SKIPPED
    assert (result.failed, result.skipped, result.cancelled) == (1, 3, 0)
    assert recorder.names("start") == ["bad"]
    assert sorted(recorder.names("skip")) == ["child", "grandchild", "later"]


def test_fail_fast_lets_running_nodes_finish() -> None:
    dag = make_dag(["bad", "slow"])

    async def main() -> Any:
        started = asyncio.Event()

        async def slow() -> str:
            started.set()
            await asyncio.sleep(0.05)
            return "done"

        async def bad() -> None:
            await started.wait()
            raise ValueError("x")

        return await AsyncDAGExecutor(dag).execute({"bad": bad, "slow": slow})

    result = asyncio.run(main())
    assert result["slow"].status is NodeStatus.COMPLETED
    assert result["bad"].status is NodeStatus.FAILED


def test_best_effort_runs_independent_branches() -> None:
    dag = make_dag(
        ["root", "branch_a", "branch_b", "join", "tail_b"],
        [
            ("root", "branch_a"),
            ("root", "branch_b"),
            ("branch_a", "join"),
            ("branch_b", "join"),
            ("branch_b", "tail_b"),
        ],
    )

    def ok() -> str:
        return "ok"

    def fail() -> None:
        raise RuntimeError("oops")

    result = DAGExecutor(dag, fail_fast=False).execute(
        {"root": ok, "branch_a": fail, "branch_b": ok, "join": ok, "tail_b": ok}
    )
    statuses = {n: r.status for n, r in result.node_results.items()}
    assert statuses == {
        "root": NodeStatus.COMPLETED,
        "branch_a": NodeStatus.FAILED,
        "branch_b": NodeStatus.COMPLETED,
        "join": NodeStatus.SKIPPED,
        "tail_b": NodeStatus.COMPLETED,
    }
    assert isinstance(result["branch_a"].error, RuntimeError)


def test_global_timeout_times_out_running_and_skips_unstarted() -> None:
    dag = make_dag(["quick", "hang", "after_hang"], [("hang", "after_hang")])
    cancelled: list[str] = []

    async def quick() -> int:
        return 1

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.append("hang")
            raise

    async def main() -> Any:
        return await AsyncDAGExecutor(dag).execute(
            {"quick": quick, "hang": hang, "after_hang": quick}, timeout=0.1
        )

    result = asyncio.run(main())
    assert result["quick"].status is NodeStatus.COMPLETED
    assert result["hang"].status is NodeStatus.TIMED_OUT
    assert isinstance(result["hang"].error, NodeTimeoutError)
    assert "execution timeout of 0.1s" in str(result["hang"].error)
    assert result["after_hang"].status is NodeStatus.SKIPPED
    assert result.cancelled == 0
    assert cancelled == ["hang"], "the async task must really be cancelled"


def test_global_timeout_abandons_a_blocking_sync_node_and_returns() -> None:
    release = threading.Event()

    def blocking() -> None:
        release.wait(5)

    try:
        result = DAGExecutor(make_dag("a")).execute({"a": blocking}, timeout=0.1)
        assert result["a"].status is NodeStatus.TIMED_OUT
    finally:
        release.set()


def test_per_node_timeout_and_its_message() -> None:
    dag = make_dag(["slow", "fast"])

    async def slow() -> None:
        await asyncio.sleep(10)

    async def fast() -> str:
        return "ok"

    result = DAGExecutor(dag, fail_fast=False).execute(
        {"slow": task(slow, timeout=0.05), "fast": fast}
    )
    assert result["slow"].status is NodeStatus.TIMED_OUT
    assert str(result["slow"].error) == "node 'slow' exceeded its timeout of 0.05s"
    assert result["fast"].status is NodeStatus.COMPLETED
    assert result.timed_out == 1


def test_timeout_error_raised_by_the_task_itself_is_a_failure() -> None:
    async def raises_timeout() -> None:
        raise TimeoutError("upstream API timed out")

    result = DAGExecutor(make_dag("a")).execute({"a": task(raises_timeout, timeout=5)})
    assert result["a"].status is NodeStatus.FAILED
    assert str(result["a"].error) == "upstream API timed out"


def test_per_node_timeout_is_retried_by_policy() -> None:
    calls: list[int] = []

    async def flaky() -> str:
        calls.append(1)
        if len(calls) == 1:
            await asyncio.sleep(10)
        return "second time lucky"

    result = DAGExecutor(make_dag("a")).execute(
        {"a": task(flaky, timeout=0.05, retry=RetryPolicy(max_attempts=2))}
    )
    assert result.value("a") == "second time lucky"
    assert result["a"].attempts == 2


@pytest.mark.parametrize("kind", ["threading", "asyncio"])
def test_cancel_event_stops_scheduling(kind: str, recorder: Recorder) -> None:
    dag = make_dag(["first", "second", "third"], [("first", "second"), ("second", "third")])

    async def main() -> Any:
        event: Any = threading.Event() if kind == "threading" else asyncio.Event()
        gate = asyncio.Event()

        async def first() -> str:
            event.set()
            # Give the engine a chance to notice (the threading.Event is polled).
            await asyncio.sleep(0.05)
            gate.set()
            return "ran"

        async def never() -> None:
            raise AssertionError("must not start after cancellation")

        executor = AsyncDAGExecutor(dag, callbacks=recorder)
        return await executor.execute(
            {"first": first, "second": never, "third": never}, cancel_event=event
        )

    result = asyncio.run(main())
    assert result["first"].status is NodeStatus.COMPLETED, "running nodes finish"
    assert result["second"].status is NodeStatus.CANCELLED
    assert result["third"].status is NodeStatus.CANCELLED
    assert result.cancelled == 2
    assert sorted(recorder.names("cancel")) == ["second", "third"]


def test_cancel_event_set_from_another_thread() -> None:
    cancel = threading.Event()
    dag = make_dag(["a", "b"], [("a", "b")])

    def a() -> None:
        threading.Timer(0.02, cancel.set).start()
        time.sleep(0.2)

    result = DAGExecutor(dag).execute({"a": a, "b": lambda: None}, cancel_event=cancel)
    assert result["b"].status is NodeStatus.CANCELLED


def test_retries_with_backoff_are_awaited_on_the_loop(recorder: Recorder) -> None:
    """While a node waits to retry, other coroutines keep running: the wait is awaited."""
    dag = make_dag(["flaky", "ticker"])
    attempts: list[int] = []
    ticks: list[int] = []

    async def flaky() -> str:
        attempts.append(len(ticks))
        if len(attempts) < 3:
            raise ConnectionError("try again")
        return "ok"

    async def ticker() -> None:
        for _ in range(5):
            ticks.append(1)
            await asyncio.sleep(0.01)

    policy = RetryPolicy(max_attempts=3, delay=0.02, backoff=2.0, jitter=0.1)
    result = DAGExecutor(dag, callbacks=recorder).execute(
        {"flaky": task(flaky, retry=policy), "ticker": ticker}
    )
    assert result.value("flaky") == "ok"
    assert result["flaky"].attempts == 3
    assert attempts[2] > attempts[0], "the ticker made progress during the retry waits"
    assert [e for e in recorder.events if e[0] == "retry"] == [
        ("retry", "flaky", 1),
        ("retry", "flaky", 2),
    ]


def test_retry_only_on_listed_exceptions() -> None:
    calls: list[int] = []

    def wrong_kind() -> None:
        calls.append(1)
        raise KeyError("not retried")

    result = DAGExecutor(
        make_dag("a"), retries=RetryPolicy(max_attempts=5, retry_on=OSError)
    ).execute({"a": wrong_kind})
    assert result["a"].status is NodeStatus.FAILED
    assert result["a"].attempts == 1 and calls == [1]


def test_default_retries_count_is_number_of_retries() -> None:
    calls: list[int] = []

    def always() -> None:
        calls.append(1)
        raise ValueError("no")

    result = DAGExecutor(make_dag("a"), retries=2).execute({"a": always})
    assert result["a"].attempts == 3 and len(calls) == 3
    assert result["a"].status is NodeStatus.FAILED


def test_retry_policy_waits() -> None:
    policy = RetryPolicy(max_attempts=5, delay=1.0, backoff=2.0, max_delay=3.0)
    assert [policy.wait_before(k) for k in (2, 3, 4, 5)] == [1.0, 2.0, 3.0, 3.0]
    jittered = RetryPolicy(delay=1.0, jitter=0.5)
    assert all(1.0 <= jittered.wait_before(2) <= 1.5 for _ in range(50))


def test_max_concurrency_is_never_exceeded() -> None:
    dag = make_dag([f"n{i}" for i in range(30)])
    running = 0
    peak = 0

    async def work() -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001)
        running -= 1

    async def main() -> Any:
        return await AsyncDAGExecutor(dag, max_concurrency=4).execute({n: work for n in dag.nodes})

    assert asyncio.run(main()).succeeded == 30
    assert peak == 4


def test_costs_start_longest_remaining_path_first(clock: Clock) -> None:
    """With one slot, among ready roots the one heading the costliest chain starts first."""
    dag = make_dag(
        ["cheap", "costly", "costly_tail", "medium"],
        [("costly", "costly_tail")],
    )
    order: list[str] = []

    def record(name: str) -> Any:
        async def run() -> None:
            order.append(name)

        return run

    async def main() -> None:
        executor = AsyncDAGExecutor(
            dag,
            max_concurrency=1,
            costs={"cheap": 1, "costly": 2, "costly_tail": 10, "medium": 5},
        )
        await executor.execute({n: record(n) for n in dag.nodes})

    asyncio.run(main())
    # costly: 2 + 10 = 12 remaining, then costly_tail (10), medium (5), cheap (1).
    assert order == ["costly", "costly_tail", "medium", "cheap"]


def test_without_costs_ready_nodes_start_in_declaration_order() -> None:
    dag = make_dag(["x", "y", "z"])
    order: list[str] = []

    def record(name: str) -> Any:
        async def run() -> None:
            order.append(name)

        return run

    async def main() -> None:
        await AsyncDAGExecutor(dag, max_concurrency=1).execute({n: record(n) for n in dag.nodes})

    asyncio.run(main())
    assert order == ["x", "y", "z"]


def test_executor_is_reusable_and_results_are_independent() -> None:
    counter = iter(range(100))

    def a() -> int:
        return next(counter)

    executor = DAGExecutor(make_dag("a"))
    assert executor.execute({"a": a}).value("a") == 0
    assert executor.execute({"a": a}).value("a") == 1


def test_keyboard_interrupt_in_a_task_stops_the_run_and_propagates() -> None:
    dag = make_dag(["interrupt", "other", "after"], [("interrupt", "after")])

    async def interrupt() -> None:
        raise KeyboardInterrupt

    async def other() -> None:
        await asyncio.sleep(10)

    async def main() -> None:
        await AsyncDAGExecutor(dag).execute(
            {"interrupt": interrupt, "other": other, "after": other}
        )

    started = time.monotonic()
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert time.monotonic() - started < 5, "the sleeping sibling was cancelled"


def test_stray_cancelled_error_from_user_code_is_a_failure() -> None:
    async def stray() -> None:
        raise asyncio.CancelledError()

    result = DAGExecutor(make_dag("a")).execute({"a": stray})
    assert result["a"].status is NodeStatus.FAILED
    assert isinstance(result["a"].error, asyncio.CancelledError)


def test_cancelling_execute_cancels_running_nodes_and_reraises() -> None:
    dag = make_dag(["hang"])
    cancelled: list[str] = []

    async def hang() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.append("hang")
            raise

    async def main() -> None:
        run = asyncio.create_task(AsyncDAGExecutor(dag).execute({"hang": hang}))
        await asyncio.sleep(0.02)
        run.cancel()
        with pytest.raises(asyncio.CancelledError):
            await run
        leftovers = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        assert leftovers == []

    asyncio.run(main())
    assert cancelled == ["hang"]


def test_sync_callable_returning_a_coroutine_is_awaited() -> None:
    async def compute() -> int:
        return 7

    result = DAGExecutor(make_dag("a")).execute({"a": lambda: compute()})
    assert result.value("a") == 7


def test_async_callable_object_runs_on_the_loop() -> None:
    class Fetcher:
        async def __call__(self) -> str:
            asyncio.get_running_loop()
            return "fetched"

    assert DAGExecutor(make_dag("a")).execute({"a": Fetcher()}).value("a") == "fetched"


def test_dag_executor_works_inside_a_running_loop() -> None:
    async def main() -> Any:
        return DAGExecutor(make_dag("a")).execute({"a": lambda: "inner"})

    assert asyncio.run(main()).value("a") == "inner"


def test_max_workers_bounds_the_threads_running_sync_tasks() -> None:
    dag = make_dag([f"n{i}" for i in range(12)])
    lock = threading.Lock()
    inside = 0
    peak = 0
    thread_names: set[str] = set()

    def blocking() -> None:
        nonlocal inside, peak
        with lock:
            inside += 1
            peak = max(peak, inside)
            thread_names.add(threading.current_thread().name)
        time.sleep(0.01)
        with lock:
            inside -= 1

    threads_before = threading.active_count()
    result = DAGExecutor(dag, max_workers=2).execute({n: blocking for n in dag.nodes})
    assert result.succeeded == 12
    assert peak == 2
    assert len(thread_names) == 2
    assert threading.active_count() == threads_before, "worker threads are shut down"


def test_empty_graph_completes_immediately(recorder: Recorder) -> None:
    result = DAGExecutor(DAG.builder().build(), callbacks=recorder).execute({})
    assert result.ok and result.node_results == {}
    assert recorder.events == [("execution_start", 0), ("execution_end",)]


def test_task_cancelling_itself_fails_instead_of_hanging_the_run() -> None:
    async def self_cancel() -> None:
        task_ = asyncio.current_task()
        assert task_ is not None
        task_.cancel()
        await asyncio.sleep(1)

    result = DAGExecutor(make_dag(["a", "b"], [("a", "b")])).execute(
        {"a": self_cancel, "b": lambda: 1}, timeout=10
    )
    assert result["a"].status is NodeStatus.FAILED
    assert isinstance(result["a"].error, asyncio.CancelledError)
    assert result["b"].status is NodeStatus.SKIPPED


def test_a_functools_wraps_decorator_keeps_the_wrapped_parameters() -> None:
    import functools

    def logged(fn: Any) -> Any:
        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            return fn(*args, **kwargs)

        return wrapper

    @logged
    def double(source: int) -> int:
        return source * 2

    dag = make_dag(["source", "double"], [("source", "double")])
    result = DAGExecutor(dag).execute({"source": lambda: 21, "double": double})
    assert result.value("double") == 42
