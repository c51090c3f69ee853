"""Issue 6: the standalone engine sends chosen (sync, CPU-bound) nodes to a Dask cluster."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Sequence

import pytest

import dagloop
from dagloop import AsyncDAGExecutor, NodeStatus, task
from dagloop.dask import DaskBackend, on_cluster
from tests.dask import engine_nodes as nodes


def _dag(nodes_: list[str], edges: Sequence[tuple[str, str]] = ()) -> dagloop.DAG:
    return dagloop.DAG.builder().add_nodes(nodes_).add_edges(list(edges)).build()


def test_cpu_bound_nodes_run_in_parallel_on_two_workers(address: str) -> None:
    names = ["b0", "b1", "b2", "b3"]
    loop_ticks: list[float] = []

    async def ticker() -> int:
        # An async node on the loop keeps running while the cluster burns CPU.
        for _ in range(10):
            loop_ticks.append(time.monotonic())
            await asyncio.sleep(0.05)
        return len(loop_ticks)

    async def main() -> dagloop.ExecutionResult:
        async with DaskBackend(address):
            tasks: dict[str, object] = {n: on_cluster(task(nodes.burn_span)) for n in names}
            return await AsyncDAGExecutor(_dag([*names, "ticker"])).execute(
                {**tasks, "ticker": ticker}
            )

    result = asyncio.run(main())
    assert result.ok, result.errors()
    spans = [result.value(n) for n in names]
    pids = {pid for pid, _, _ in spans}
    assert len(pids) == 2 and os.getpid() not in pids
    assert result.value("ticker") == 10
    # 4 x 0.6 s of CPU on 2 worker processes: the two processes burned at the same time
    # (about 1.2 s of wall on a quiet machine, not 2.4 s; the overlap holds under any load).
    first, second = ([s for s in spans if s[0] == pid] for pid in pids)
    assert any(a[1] < b[2] and b[1] < a[2] for a in first for b in second)


def test_results_flow_between_cluster_and_loop_nodes(address: str) -> None:
    async def right() -> int:
        return 40

    async def main() -> dagloop.ExecutionResult:
        async with DaskBackend(address):
            dag = _dag(["left", "right", "add"], [("left", "add"), ("right", "add")])
            return await AsyncDAGExecutor(dag).execute(
                {"left": on_cluster(lambda: 2), "right": right, "add": on_cluster(nodes.add)}
            )

    result = asyncio.run(main())
    assert result.ok, result.errors()
    assert result.value("add") == 42


def test_failures_retries_and_timeouts(address: str) -> None:
    async def main() -> dagloop.ExecutionResult:
        async with DaskBackend(address):
            dag = _dag(["explode", "sleepy"])
            return await AsyncDAGExecutor(dag, fail_fast=False).execute(
                {
                    "explode": on_cluster(task(nodes.explode, retry=1)),
                    "sleepy": on_cluster(task(nodes.sleepy, timeout=0.5)),
                }
            )

    started = time.monotonic()
    result = asyncio.run(main())
    assert time.monotonic() - started < 10
    assert result["explode"].status == NodeStatus.FAILED
    assert result["explode"].attempts == 2
    assert "boom on a worker" in str(result.errors()["explode"])
    assert result["sleepy"].status == NodeStatus.TIMED_OUT


def test_processes_backend_and_errors() -> None:
    async def main() -> set[int]:
        async with DaskBackend(processes=2) as backend:
            pids = await asyncio.gather(*(backend.run(nodes.burn, 0.3) for _ in range(4)))
            return set(pids)

    assert len(asyncio.run(main())) == 2

    with pytest.raises(dagloop.ConfigError, match="exactly one of"):
        DaskBackend()
    with pytest.raises(dagloop.ConfigError, match="processes="):
        DaskBackend(processes=0)

    async def fine() -> None:
        return None

    with pytest.raises(dagloop.ConfigError, match="async functions"):
        on_cluster(fine)

    async def unopened() -> dagloop.ExecutionResult:
        return await AsyncDAGExecutor(_dag(["p"])).execute({"p": on_cluster(nodes.worker_pid)})

    result = asyncio.run(unopened())
    assert "no DaskBackend is open" in str(result.errors()["p"])
