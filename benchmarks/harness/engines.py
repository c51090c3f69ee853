"""Engine suite: workloads and the DAG engines compared on them.

Every engine runs the same graph (nodes numbered in topological order, ``parents[i]``
lists node i's dependencies) with the same node callables ``async def f(*_)``. Adding an
engine is one more entry in ``ENGINES``: a function that builds whatever the engine needs
and returns an ``async`` runner to call once per repetition.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

NodeFn = Callable[..., Awaitable[Any]]
Runner = Callable[[], Awaitable[None]]


# --------------------------------------------------------------------------- workloads


@dataclass
class Workload:
    key: str
    label: str
    parents: list[list[int]]
    sleeps: list[float]
    names: list[str] = field(default_factory=list)

    @property
    def n(self) -> int:
        return len(self.parents)

    def critical_path(self) -> float:
        finish = [0.0] * self.n
        for i, ps in enumerate(self.parents):
            finish[i] = max((finish[p] for p in ps), default=0.0) + self.sleeps[i]
        return max(finish, default=0.0)

    def edges(self) -> list[tuple[int, int]]:
        return [(p, i) for i, ps in enumerate(self.parents) for p in ps]


def independent(n: int) -> Workload:
    return Workload("independent", f"{n:,} independent no-op", [[] for _ in range(n)], [0.0] * n)


def chain(n: int) -> Workload:
    return Workload("chain", f"chain of {n:,}", [[]] + [[i - 1] for i in range(1, n)], [0.0] * n)


def layered(n: int, width: int = 100, deps: int = 3, seed: int = 4) -> Workload:
    """Random layered DAG: layers of ``width`` nodes, each node after the first layer
    depends on ``deps`` distinct random nodes of the previous layer."""
    rng = random.Random(seed)
    parents: list[list[int]] = []
    for i in range(n):
        layer = i // width
        if layer == 0:
            parents.append([])
        else:
            lo, hi = (layer - 1) * width, layer * width
            parents.append(sorted(rng.sample(range(lo, hi), deps)))
    return Workload("layered", f"random layered {n:,} (~{deps} deps)", parents, [0.0] * n)


def diamond(scale: float = 1.0) -> Workload:
    """The graph of async-dag's README (seed 002), with sleeps."""
    names = ["fast_task_a", "slow_task_b", "slow_task_a", "fast_task_b", "fast_task_c", "end_task"]
    idx = {nm: i for i, nm in enumerate(names)}
    deps = {
        "fast_task_a": [],
        "slow_task_b": ["fast_task_a"],
        "slow_task_a": [],
        "fast_task_b": [],
        "fast_task_c": ["slow_task_a", "fast_task_b"],
        "end_task": ["slow_task_b", "fast_task_c"],
    }
    sleeps = {
        "fast_task_a": 0.1,
        "slow_task_b": 0.4,
        "slow_task_a": 0.5,
        "fast_task_b": 0.1,
        "fast_task_c": 0.1,
        "end_task": 0.1,
    }
    return Workload(
        "diamond",
        "diamond (seed 002) with sleeps",
        [[idx[d] for d in deps[nm]] for nm in names],
        [sleeps[nm] * scale for nm in names],
        names=names,
    )


def sleepers(n: int, seconds: float = 1.0) -> Workload:
    return Workload(
        "sleep", f"{n:,} nodes sleeping {seconds:g} s", [[] for _ in range(n)], [seconds] * n
    )


def make_workload(key: str, size: int) -> Workload:
    if key == "independent":
        return independent(size)
    if key == "chain":
        return chain(size)
    if key == "layered":
        return layered(size)
    if key == "diamond":
        return diamond()
    if key == "sleep":
        return sleepers(size)
    raise KeyError(key)


class Counter:
    calls = 0


def node_fns(wl: Workload) -> list[NodeFn]:
    """One callable per node; accepts (and ignores) upstream results for async-dag."""

    async def noop(*_: Any) -> None:
        Counter.calls += 1

    def sleeper(seconds: float) -> NodeFn:
        async def f(*_: Any) -> None:
            await asyncio.sleep(seconds)
            Counter.calls += 1

        return f

    return [sleeper(s) if s > 0 else noop for s in wl.sleeps]


def node_name(wl: Workload, i: int) -> str:
    return wl.names[i] if wl.names else f"n{i}"


# --------------------------------------------------------------------------- engines


def build_taskgroup(wl: Workload, fns: list[NodeFn]) -> Runner:
    """The hand-written baseline: one task per node, awaiting its parents' tasks."""
    parents = wl.parents

    async def after(deps: list[asyncio.Task[Any]], fn: NodeFn) -> Any:
        for d in deps:
            await d
        return await fn()

    async def run() -> None:
        tasks: list[asyncio.Task[Any]] = []
        async with asyncio.TaskGroup() as tg:
            for i, ps in enumerate(parents):
                if ps:
                    tasks.append(tg.create_task(after([tasks[p] for p in ps], fns[i])))
                else:
                    tasks.append(tg.create_task(fns[i]()))

    return run


def _builder_style(build_dag: Any, wl: Workload, fns: list[NodeFn]) -> Runner:
    """async-dag's API, which dagloop's `build_dag` also offers: upstream nodes are
    passed positionally to `add_node`, `invoke` runs the graph."""
    with build_dag() as tm:
        nodes: list[Any] = []
        for i, ps in enumerate(wl.parents):
            nodes.append(tm.add_node(fns[i], *[nodes[p] for p in ps]))

    async def run() -> None:
        await tm.invoke(None)

    return run


def build_async_dag(wl: Workload, fns: list[NodeFn]) -> Runner:
    from async_dag import build_dag

    return _builder_style(build_dag, wl, fns)


def build_dagron(wl: Workload, fns: list[NodeFn]) -> Runner:
    import dagron

    b = dagron.DAG.builder()
    names = [node_name(wl, i) for i in range(wl.n)]
    for nm in names:
        b.add_node(nm)
    for p, c in wl.edges():
        b.add_edge(names[p], names[c])
    dag = b.build()
    tasks = dict(zip(names, fns, strict=True))
    executor = dagron.AsyncDAGExecutor(dag)  # max_workers=None: unlimited

    async def run() -> None:
        res = await executor.execute(tasks)
        if res.succeeded != wl.n:
            raise RuntimeError(f"dagron: {res.succeeded}/{wl.n} succeeded, {res.failed} failed")

    return run


def build_dagloop(wl: Workload, fns: list[NodeFn]) -> Runner:
    import dagloop

    b = dagloop.DAG.builder()
    names = [node_name(wl, i) for i in range(wl.n)]
    for nm in names:
        b = b.add_node(nm)
    for p, c in wl.edges():
        b = b.add_edge(names[p], names[c])
    dag = b.build()
    tasks = dict(zip(names, fns, strict=True))
    executor = dagloop.AsyncDAGExecutor(dag, max_concurrency=None)

    async def run() -> None:
        res = await executor.execute(tasks)
        ok = getattr(res, "succeeded", wl.n)
        if ok != wl.n:
            raise RuntimeError(f"dagloop: {ok}/{wl.n} succeeded")

    return run


def build_dagloop_build_dag(wl: Workload, fns: list[NodeFn]) -> Runner:
    from dagloop import build_dag

    return _builder_style(build_dag, wl, fns)


@dataclass(frozen=True)
class EngineSpec:
    key: str
    label: str
    build: Callable[[Workload, list[NodeFn]], Runner]
    probe: str  # "module:attr" that must import for the engine to be available
    package: str | None = None


ENGINES: dict[str, EngineSpec] = {
    e.key: e
    for e in [
        EngineSpec(
            "taskgroup", "asyncio.TaskGroup (hand-written)", build_taskgroup, "asyncio:TaskGroup"
        ),
        EngineSpec(
            "dagloop",
            "dagloop AsyncDAGExecutor",
            build_dagloop,
            "dagloop:AsyncDAGExecutor",
            "dagloop",
        ),
        EngineSpec(
            "dagloop_build_dag",
            "dagloop build_dag",
            build_dagloop_build_dag,
            "dagloop:build_dag",
            "dagloop",
        ),
        EngineSpec(
            "async_dag", "async-dag 0.3.1", build_async_dag, "async_dag:build_dag", "async-dag"
        ),
        EngineSpec(
            "dagron",
            "dagron 0.1.1 AsyncDAGExecutor",
            build_dagron,
            "dagron:AsyncDAGExecutor",
            "dagron",
        ),
    ]
}
BASELINE = "taskgroup"
