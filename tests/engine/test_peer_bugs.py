"""Bugs found in async-dag and dagron that must not happen here, one test each."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

from dagloop import DAG, AsyncDAGExecutor, DAGExecutor, NodeStatus, build_dag

from .conftest import Clock, make_dag


def test_same_upstream_passed_twice_runs() -> None:
    """async-dag never runs add_node(f, a, a)."""

    async def source() -> int:
        return 21

    async def add(x: int, y: int) -> int:
        return x + y

    async def main() -> int:
        with build_dag() as g:
            a = g.add_node(source)
            doubled = g.add_node(add, a, a)
        result = await g.invoke(None, timeout=5)
        value: int = doubled.extract_result(result)
        return value

    assert asyncio.run(main()) == 42


def test_slow_branch_does_not_delay_a_fast_chain(clock: Clock) -> None:
    """dagron runs level by level. Here the slow node only finishes after the whole fast
    chain has run, which is impossible if levels wait for each other."""
    chain = [f"fast{i}" for i in range(6)]
    dag = make_dag(
        ["slow", "slow_child", *chain], [("slow", "slow_child"), *itertools.pairwise(chain)]
    )
    stamps: dict[str, int] = {}

    async def main() -> Any:
        chain_done = asyncio.Event()

        async def slow() -> None:
            await chain_done.wait()
            stamps["slow"] = clock.tick()

        def step(name: str) -> Any:
            async def run() -> None:
                stamps[name] = clock.tick()
                if name == chain[-1]:
                    chain_done.set()

            return run

        tasks = {name: step(name) for name in chain}
        tasks["slow"] = slow
        tasks["slow_child"] = step("slow_child")
        # The timeout only guards against a level-by-level engine deadlocking this test.
        return await AsyncDAGExecutor(dag).execute(tasks, timeout=10)

    result = asyncio.run(main())
    assert result.ok
    assert stamps["fast5"] < stamps["slow"] < stamps["slow_child"]


def test_overall_timeout_is_global_not_per_node() -> None:
    """dagron's 'overall' timeout applies to each node. A chain of four 0.15 s nodes
    under a 0.25 s execution timeout cannot complete."""
    names = ["n0", "n1", "n2", "n3"]
    dag = make_dag(names, itertools.pairwise(names))

    async def nap() -> None:
        await asyncio.sleep(0.15)

    result = DAGExecutor(dag).execute({n: nap for n in names}, timeout=0.25)
    assert result.succeeded < 4
    assert result.timed_out == 1
    assert result["n3"].status is NodeStatus.SKIPPED


def test_sync_executor_awaits_async_tasks_and_returns_their_value() -> None:
    """dagron's sync executor marks an async task COMPLETED with an un-awaited coroutine."""

    async def fetch() -> dict[str, int]:
        await asyncio.sleep(0)
        return {"rows": 3}

    result = DAGExecutor(make_dag("a")).execute({"a": fetch})
    assert result["a"].status is NodeStatus.COMPLETED
    assert result.value("a") == {"rows": 3}
    assert not asyncio.iscoroutine(result.value("a"))


def test_skipping_descendants_of_a_failed_10k_chain_is_fast() -> None:
    n = 10_000
    builder = DAG.builder().add_nodes(f"n{i}" for i in range(n))
    builder.add_edges((f"n{i}", f"n{i + 1}") for i in range(n - 1))
    dag = builder.build()

    def fail() -> None:
        raise RuntimeError("head failed")

    tasks: dict[str, Any] = {name: (lambda: None) for name in dag.nodes}
    tasks["n0"] = fail

    async def main() -> Any:
        return await AsyncDAGExecutor(dag, fail_fast=False).execute(tasks)

    started = time.perf_counter()
    result = asyncio.run(main())
    elapsed = time.perf_counter() - started
    assert result.failed == 1 and result.skipped == n - 1
    # Linear skipping takes milliseconds; the bound is loose for slow CI machines.
    assert elapsed < 1.0, f"skipping 9,999 descendants took {elapsed:.2f}s"
