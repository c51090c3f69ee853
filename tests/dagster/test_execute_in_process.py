"""`dagloop.dagster.execute_in_process`: a job defined anywhere (here: inside the test
functions, so nothing is reconstructable) runs in this process with dagloop's executor,
and returns Dagster's own `ExecuteInProcessResult`."""

# No `from __future__ import annotations`: Dagster reads the ops' annotations.
import asyncio
import itertools
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import ClassVar

import dagster as dg
import pytest

from dagloop.dagster import async_executor, execute_in_process
from tests.dagster.conftest import ENGINE_MARK

E = dg.DagsterEventType


def _engine_messages(result: dg.ExecuteInProcessResult) -> list[str]:
    return [e.message or "" for e in result.all_events if e.event_type == E.ENGINE_EVENT]


def _ran_on_dagloop(result: dg.ExecuteInProcessResult) -> bool:
    return any(ENGINE_MARK in m for m in _engine_messages(result))


def _overlapping(spans: list[tuple[float, float]]) -> bool:
    """Every span started before the first one ended."""
    first_end = min(end for _, end in spans)
    return all(start < first_end for start, _ in spans)


def _one_after_another(spans: list[tuple[float, float]]) -> bool:
    ordered = sorted(spans)
    return all(a[1] <= b[0] for a, b in itertools.pairwise(ordered))


def _fanout_job(
    width: int, seconds: float, **job_kwargs: object
) -> tuple[dg.JobDefinition, list[tuple[float, float]]]:
    """A dynamic fan-out of `width` async ops sleeping `seconds`; and the list their
    (start, end) times go to."""
    spans: list[tuple[float, float]] = []

    @dg.op(out=dg.DynamicOut())
    def numbers() -> Iterator[dg.DynamicOutput[int]]:
        for i in range(width):
            yield dg.DynamicOutput(i, mapping_key=f"n{i}")

    @dg.op
    async def wait_then_double(value: int) -> int:
        started = time.monotonic()
        await asyncio.sleep(seconds)
        spans.append((started, time.monotonic()))
        return 2 * value

    @dg.op
    def total(values: list[int]) -> int:
        return sum(values)

    @dg.job(**job_kwargs)  # type: ignore[call-overload]
    def fanout() -> None:
        total(numbers().map(wait_then_double).collect())

    return fanout, spans


def test_async_steps_run_concurrently_on_dagloops_executor() -> None:
    width = 10
    job, spans = _fanout_job(width, 1.0)
    started = time.monotonic()
    result = execute_in_process(job)
    elapsed = time.monotonic() - started

    assert type(result) is dg.ExecuteInProcessResult
    assert result.success
    assert _ran_on_dagloop(result)
    assert result.output_for_node("total") == sum(2 * i for i in range(width))
    # Dynamic outputs of a mapped op, by mapping key, as execute_in_process gives them.
    assert result.output_for_node("wait_then_double") == {f"n{i}": 2 * i for i in range(width)}
    # Every sleep started before the first one ended: they overlapped...
    assert len(spans) == width and _overlapping(spans)
    # ...so the run took far less than the one-after-another 10 s (generous: loaded CI).
    assert elapsed < width / 2


def test_dagsters_execute_in_process_runs_the_same_job_one_step_at_a_time() -> None:
    """What the helper is for: Dagster's own shortcut ignores the job's executor."""
    job, spans = _fanout_job(3, 0.3, executor_def=async_executor)
    result = job.execute_in_process()
    assert result.success and not _ran_on_dagloop(result)
    assert len(spans) == 3 and _one_after_another(spans)


def test_the_jobs_configured_executor_is_honoured() -> None:
    job, spans = _fanout_job(4, 0.2, executor_def=async_executor.configured({"max_concurrent": 1}))
    result = execute_in_process(job)
    assert result.success and _ran_on_dagloop(result)
    # max_concurrent: 1 - no two mapped steps overlap.
    assert len(spans) == 4 and _one_after_another(spans)


def test_run_config_configures_the_executor() -> None:
    job, _ = _fanout_job(2, 0.0)
    result = execute_in_process(job, {"execution": {"config": {"sync_threads": 3}}})
    assert result.success
    assert any("3 worker threads for sync steps" in m for m in _engine_messages(result))


def test_failures_raise_the_users_error_or_fail_the_result() -> None:
    @dg.op
    async def breaks() -> int:
        raise ValueError("the op's own error")

    @dg.op
    def downstream(value: int) -> int:
        return value

    @dg.op
    async def unrelated() -> str:
        return "fine"

    @dg.job
    def failing() -> None:
        downstream(breaks())
        unrelated()

    with pytest.raises(ValueError, match="the op's own error"):
        execute_in_process(failing)

    result = execute_in_process(failing, raise_on_error=False)
    assert not result.success
    assert result.dagster_run.status == dg.DagsterRunStatus.FAILURE
    assert _ran_on_dagloop(result)
    (failure,) = [e for e in result.all_events if e.event_type == E.STEP_FAILURE]
    assert failure.step_key == "breaks"
    assert "the op's own error" in str(failure.step_failure_data.error)
    assert "downstream" not in {e.step_key for e in result.all_events if e.is_step_start}
    assert result.output_for_node("unrelated") == "fine"


class Greeting(dg.ConfigurableResource):  # type: ignore[misc]
    word: str


class Pool:
    """Stands in for an async client or connection pool: bound to the loop it was opened
    on; counts the calls in flight."""

    opened: ClassVar[list["Pool"]] = []

    def __init__(self) -> None:
        self.loop = asyncio.get_running_loop()
        self.in_flight = 0
        self.most = 0
        Pool.opened.append(self)

    async def use(self) -> None:
        assert asyncio.get_running_loop() is self.loop, "used from another loop"
        self.in_flight += 1
        self.most = max(self.most, self.in_flight)
        await asyncio.sleep(0.3)
        self.in_flight -= 1


class PoolResource(dg.ConfigurableResource):  # type: ignore[misc]
    @asynccontextmanager
    async def yield_for_execution(self, context: dg.InitResourceContext) -> AsyncIterator[Pool]:
        yield Pool()  # type: ignore[misc]


def test_resources_given_as_a_dict_are_shared_by_all_steps() -> None:
    Pool.opened.clear()

    @dg.op(out=dg.DynamicOut())
    def keys() -> Iterator[dg.DynamicOutput[int]]:
        for i in range(5):
            yield dg.DynamicOutput(i, mapping_key=f"k{i}")

    @dg.op(required_resource_keys={"pool", "greeting", "answer"})
    async def call(context, value: int) -> str:
        await context.resources.pool.use()
        return f"{context.resources.greeting.word} {value} {context.resources.answer}"

    @dg.op(required_resource_keys={"pool"})
    def most_at_once(context, texts: list[str]) -> int:
        assert len(texts) == 5
        return int(context.resources.pool.most)

    @dg.job
    def with_resources() -> None:
        most_at_once(keys().map(call).collect())

    result = execute_in_process(
        with_resources,
        resources={"pool": PoolResource(), "greeting": Greeting(word="hello"), "answer": 42},
    )
    assert result.success
    assert result.output_for_node("call")["k3"] == "hello 3 42"
    assert len(Pool.opened) == 1  # one pool for the whole run
    assert result.output_for_node("most_at_once") == 5  # used by all five steps at once


def test_op_selection_tags_and_a_given_instance() -> None:
    ran: list[str] = []
    lock = threading.Lock()

    @dg.op
    async def first() -> int:
        with lock:
            ran.append("first")
        return 1

    @dg.op
    async def second(value: int) -> int:
        with lock:
            ran.append("second")
        return value + 1

    @dg.op
    async def elsewhere() -> None:
        with lock:
            ran.append("elsewhere")

    @dg.job(tags={"team": "data"})
    def selectable() -> None:
        second(first())
        elsewhere()

    with dg.DagsterInstance.ephemeral() as instance:
        result = execute_in_process(
            selectable, instance=instance, op_selection=["first", "second"], tags={"ticket": "7"}
        )
        assert result.success and _ran_on_dagloop(result)
        assert sorted(ran) == ["first", "second"]
        assert result.output_for_node("second") == 2
        stored = instance.get_run_by_id(result.run_id)
        assert stored is not None and stored.status == dg.DagsterRunStatus.SUCCESS
        assert stored.tags["ticket"] == "7" and stored.tags["team"] == "data"
        logged = [r.user_message for r in instance.all_logs(result.run_id)]
        assert any(ENGINE_MARK in m for m in logged)


def test_input_values_and_asset_selection() -> None:
    @dg.op
    async def scale(factor: int) -> int:
        return 10 * factor

    @dg.graph
    def with_input(factor: int) -> None:
        scale(factor)

    result = execute_in_process(with_input.to_job(), input_values={"factor": 4})
    assert result.success and result.output_for_node("scale") == 40

    @dg.asset
    async def upstream() -> int:
        await asyncio.sleep(0.1)
        return 1

    @dg.asset
    async def downstream(upstream: int) -> int:
        return upstream + 1

    @dg.asset
    async def unselected() -> int:
        return 0

    defs = dg.Definitions(
        assets=[upstream, downstream, unselected],
        jobs=[dg.define_asset_job("assets_job")],
        executor=async_executor,
    )
    job = defs.resolve_job_def("assets_job")
    result = execute_in_process(
        job, asset_selection=[dg.AssetKey("upstream"), dg.AssetKey("downstream")]
    )
    assert result.success and _ran_on_dagloop(result)
    materialized = {
        e.asset_key.to_user_string() for e in result.all_events if e.is_step_materialization
    }
    assert materialized == {"upstream", "downstream"}
    assert result.output_for_node("downstream") == 2


def test_anything_but_a_job_definition_is_refused_by_name() -> None:
    @dg.op
    def nothing() -> None:
        pass

    @dg.graph
    def a_graph() -> None:
        nothing()

    with pytest.raises(TypeError, match=r"got GraphDefinition.*graph\.to_job\(\)"):
        execute_in_process(a_graph)  # type: ignore[arg-type]
