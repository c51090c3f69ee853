"""Reconstructable jobs for the Dask scale-out tests (loaded by module path on workers)."""

import asyncio
import os
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import dagster as dg

from dagloop.dagster import async_executor
from tests.dagster.jobs import printing

PLACEMENT = "dagloop/placement"
WIDTH = 6


@dg.op
async def source() -> int:
    await asyncio.sleep(0.01)
    return 1


@dg.op(out=dg.DynamicOut(int))
def fan_out(seed: int) -> Any:
    for i in range(WIDTH):
        yield dg.DynamicOutput(seed + i, mapping_key=str(i))


@dg.op
async def slow_async(value: int) -> dict[str, int]:
    await asyncio.sleep(0.5)
    return {"value": value, "pid": os.getpid()}


@dg.op
def cpu_sync(record: dict[str, int]) -> dict[str, int]:
    total = sum(i * i for i in range(20_000))
    return {**record, "cpu": total % 7, "sync_pid": os.getpid()}


@dg.op(tags={PLACEMENT: "local"})
def collect(records: list[dict[str, int]]) -> dict[str, Any]:
    return {
        "values": sorted(r["value"] for r in records),
        "pids": sorted({r["pid"] for r in records} | {r["sync_pid"] for r in records}),
        "collector_pid": os.getpid(),
    }


@dg.job(executor_def=async_executor)
def fanout_job() -> None:
    collect(fan_out(source()).map(slow_async).map(cpu_sync).collect())


def fanout() -> dg.JobDefinition:
    return fanout_job


# -- retries, skips --------------------------------------------------------------------


@dg.op(retry_policy=dg.RetryPolicy(max_retries=2), config_schema={"marker_dir": str})
def flaky(context: dg.OpExecutionContext) -> int:
    marker = Path(context.op_config["marker_dir"]) / f"{context.run_id}-flaky"
    attempts = int(marker.read_text()) if marker.exists() else 0
    marker.write_text(str(attempts + 1))
    if attempts < 2:
        raise RuntimeError(f"flaky attempt {attempts}")
    return attempts


@dg.op(out={"taken": dg.Out(is_required=False), "not_taken": dg.Out(is_required=False)})
def branch(attempts: int) -> Any:
    yield dg.Output(attempts, "taken")


@dg.op
def after_taken(value: int) -> int:
    return value + 1


@dg.op
def after_not_taken(value: int) -> int:  # pragma: no cover - skipped
    return value


@dg.op
def always_fails() -> int:
    raise ValueError("boom on the cluster")


@dg.op
def downstream_of_failure(value: int) -> int:  # pragma: no cover - never runs
    return value


@dg.job(executor_def=async_executor)
def retries_skips_job() -> None:
    taken, not_taken = branch(flaky())
    after_taken(taken)
    after_not_taken(not_taken)
    downstream_of_failure(always_fails())


def retries_skips() -> dg.JobDefinition:
    return retries_skips_job


# -- termination ------------------------------------------------------------------------


@dg.op
async def sleeps_long() -> None:
    await asyncio.sleep(60)


@dg.op
def blocks_long() -> None:
    time.sleep(60)


@dg.op
async def quick() -> int:
    return 1


@dg.job(executor_def=async_executor)
def long_job() -> None:
    sleeps_long()
    blocks_long()
    quick()


def long() -> dg.JobDefinition:
    return long_job


# -- pools -------------------------------------------------------------------------------


@dg.op(pool="dagloop-dask-pool", tags={"lane": "single"})
async def pooled(value: int) -> float:
    started = time.time()
    await asyncio.sleep(0.3)
    return started


@dg.op(tags={PLACEMENT: "local"})
def pooled_starts(starts: list[float]) -> list[float]:
    return sorted(starts)


@dg.job(executor_def=async_executor)
def pooled_job() -> None:
    pooled_starts(fan_out(source()).map(pooled).collect())


def pools() -> dg.JobDefinition:
    return pooled_job


def not_reconstructable() -> dg.JobDefinition:
    return fanout_job


# -- live events -------------------------------------------------------------------------


@dg.op
async def takes_two_seconds() -> None:
    await asyncio.sleep(2)


@dg.job(executor_def=async_executor)
def live_job() -> None:
    quick()
    takes_two_seconds()


def live() -> dg.JobDefinition:
    return live_job


@dg.op(tags={PLACEMENT: "elsewhere"})
def misplaced() -> None:
    pass


@dg.job(executor_def=async_executor)
def bad_placement_job() -> None:
    misplaced()


def bad_placement() -> dg.JobDefinition:
    return bad_placement_job


# -- resources once per worker process ---------------------------------------------------

SHARED_WIDTH = 12
SHARED_LIMIT = 3


class WorkerClient:
    """Stands in for an HTTP client or DB pool: bound to the loop it was opened on, and
    leaves a marker file when opened and when closed."""

    def __init__(self, marker_dir: Path) -> None:
        self.loop = asyncio.get_running_loop()
        self.semaphore = asyncio.Semaphore(SHARED_LIMIT)
        self.in_flight = 0
        self.peak = 0
        self.marker = marker_dir / f"{os.getpid()}-{id(self)}"
        self.marker.with_suffix(".open").touch()

    async def get(self, item: int) -> dict[str, int]:
        assert asyncio.get_running_loop() is self.loop, "client used from another loop"
        async with self.semaphore:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            await asyncio.sleep(0.3)
            self.in_flight -= 1
        return {
            "value": item,
            "pid": os.getpid(),
            "client": id(self),
            "loop": id(asyncio.get_running_loop()),
            "peak": self.peak,
        }

    def close(self) -> None:
        self.marker.with_suffix(".closed").touch()


class WorkerClientResource(dg.ConfigurableResource):
    marker_dir: str
    #: Fail to open in every process but this one (0: never fail).
    only_opens_in_pid: int = 0

    @asynccontextmanager
    async def yield_for_execution(
        self, context: dg.InitResourceContext
    ) -> AsyncIterator["WorkerClient"]:
        if self.only_opens_in_pid and os.getpid() != self.only_opens_in_pid:
            raise ConnectionError(f"database unreachable from pid {os.getpid()}")
        client = WorkerClient(Path(self.marker_dir))
        try:
            yield client  # type: ignore[misc]
        finally:
            await asyncio.sleep(0)
            client.close()


@dg.op(out=dg.DynamicOut(int), tags={PLACEMENT: "local"})
def many_items() -> Any:
    for i in range(SHARED_WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def call_client(client: WorkerClientResource, item: int) -> dict[str, int]:
    return await client.get(item)  # type: ignore[attr-defined,no-any-return]


@dg.op(tags={PLACEMENT: "local"})
def gather_calls(records: list[dict[str, int]]) -> list[dict[str, int]]:
    return sorted(records, key=lambda r: r["value"])


@dg.job(
    executor_def=async_executor,
    resource_defs={"client": WorkerClientResource.configure_at_launch()},
)
def shared_client_job() -> None:
    gather_calls(many_items().map(call_client).collect())


def shared_client() -> dg.JobDefinition:
    return shared_client_job


# -- re-execution ------------------------------------------------------------------------


@dg.op(config_schema={"marker_dir": str})
async def fails_in_first_run(context: dg.OpExecutionContext, value: int) -> int:
    marker = Path(context.op_config["marker_dir"]) / "failed-once"
    if value == 3 and not marker.exists():
        marker.touch()
        raise RuntimeError("value 3 fails in the first run")
    await asyncio.sleep(0.05)
    return value * 10


@dg.op(tags={PLACEMENT: "local"})
def total(values: list[int]) -> int:
    return sum(values)


@dg.job(executor_def=async_executor)
def reexecution_job() -> None:
    total(fan_out(source()).map(fails_in_first_run).collect())


def reexecution() -> dg.JobDefinition:
    return reexecution_job


# -- a local cluster starting while the run's first steps run ---------------------------


@dg.op(tags={PLACEMENT: "local"}, config_schema={"seconds": dg.Field(float, default_value=0.0)})
async def first_local(context: dg.OpExecutionContext) -> float:
    started = time.time()
    await asyncio.sleep(context.op_config["seconds"])
    return started


@dg.op(tags={PLACEMENT: "cluster"})  # a default-placed step would be lent to the loop
def on_worker(local_started: float) -> dict[str, Any]:
    import psutil  # a dependency of distributed: on every worker

    return {
        "local_started": local_started,
        "worker_started": psutil.Process().create_time(),
        "pid": os.getpid(),
        "parent_pid": os.getppid(),
        "mark": os.environ.get("DAGLOOP_TEST_MARK"),
    }


@dg.job(executor_def=async_executor)
def head_start_job() -> None:
    on_worker(first_local())


def head_start() -> dg.JobDefinition:
    return head_start_job


# -- steps lent to the run's loop while its local cluster starts -------------------------


def _where(name: str) -> dict[str, Any]:
    print(printing.marker(name, 0))  # for its own capture, wherever it runs
    return {"name": name, "pid": os.getpid(), "at": time.time()}


EARLY = {"marker_dir": dg.Field(str), "meet": dg.Field(bool, default_value=True)}


async def _wait_for(marker: Path) -> bool:
    """Until `marker` exists, 60 s at most; whether it does."""
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    return marker.exists()


async def _meet(context: dg.OpExecutionContext, me: str, other: str) -> dict[str, Any]:
    """Say this step began, then (`meet`) wait, 60 s at most, until the other one began
    too."""
    began = _where(me)
    if not context.op_config["meet"]:
        return began
    markers = Path(context.op_config["marker_dir"])
    (markers / me).write_text(str(os.getpid()))
    return {**began, "met": await _wait_for(markers / other)}


@dg.op(config_schema=EARLY)
async def early_a(context: dg.OpExecutionContext) -> dict[str, Any]:
    return await _meet(context, "early_a", "early_b")


@dg.op(config_schema=EARLY)
async def early_b(context: dg.OpExecutionContext) -> dict[str, Any]:
    return await _meet(context, "early_b", "early_a")


@dg.op(tags={PLACEMENT: "cluster"})
def tagged_for_cluster() -> dict[str, Any]:
    return _where("tagged_for_cluster")


@dg.op
def after_ready(
    a: dict[str, Any], b: dict[str, Any], tagged: dict[str, Any]
) -> list[dict[str, Any]]:
    # Downstream of a step only the cluster runs: the cluster is ready by now.
    return [a, b, tagged, _where("after_ready")]


@dg.job(executor_def=async_executor)
def lent_while_starting_job() -> None:
    after_ready(early_a(), early_b(), tagged_for_cluster())


def lent_while_starting() -> dg.JobDefinition:
    return lent_while_starting_job


@dg.op(tags={PLACEMENT: "local"})
def gate_fails() -> int:
    raise ValueError("the gate fails before the cluster is up")


@dg.job(executor_def=async_executor)
def gate_fails_job() -> None:
    on_worker(gate_fails())


def gate_fails_first() -> dg.JobDefinition:
    return gate_fails_job


# -- streaming: mapped steps on the cluster start while their producer, there too, yields

#: How long a streaming producer waits for proof that a mapped step ran before it fails.
STREAM_PROOF_SECONDS = 60.0
STREAM_ITEMS = 8


def _stream_marker(context: dg.OpExecutionContext) -> Path:
    return Path(context.op_config["marker_dir"]) / "a-mapped-step-ran"


def _no_proof() -> dg.Failure:
    return dg.Failure(
        f"no mapped step ran within {STREAM_PROOF_SECONDS:g} s while the producer yielded"
    )


@dg.op(out=dg.DynamicOut(int), config_schema={"marker_dir": str})
async def awaiting_producer(context: dg.OpExecutionContext) -> AsyncIterator[dg.DynamicOutput]:
    """Yields one output, awaits until one of its mapped steps ran, then yields the rest
    (streams under the executor's `step_dependency_config`)."""
    yield dg.DynamicOutput(0, mapping_key="0")
    deadline = time.monotonic() + STREAM_PROOF_SECONDS
    while not _stream_marker(context).exists():
        if time.monotonic() > deadline:
            raise _no_proof()
        await asyncio.sleep(0.02)
    for i in range(1, STREAM_ITEMS):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(
    out=dg.DynamicOut(int),
    config_schema={"marker_dir": str},
    tags={"dagloop/stream_dynamic_outputs": "true"},
)
async def busy_producer(context: dg.OpExecutionContext) -> AsyncIterator[dg.DynamicOutput]:
    """Never awaits: yields outputs, each after 5 ms of blocking work, until one of its
    mapped steps ran (streams by its op tag)."""
    deadline = time.monotonic() + STREAM_PROOF_SECONDS
    index = 0
    while not _stream_marker(context).exists():
        if time.monotonic() > deadline:
            raise _no_proof()
        yield dg.DynamicOutput(index, mapping_key=str(index))
        index += 1
        time.sleep(0.005)  # holds its worker's loop, as CPU-bound code would


@dg.op(config_schema={"marker_dir": str})
async def marks_streamed(context: dg.OpExecutionContext, item: int) -> dict[str, int]:
    _stream_marker(context).touch()
    return {"item": item, "pid": os.getpid()}


def _counted(records: list[dict[str, int]]) -> dict[str, Any]:
    return {
        "items": sorted(r["item"] for r in records),
        "pids": sorted({r["pid"] for r in records}),
        "collector_pid": os.getpid(),
    }


@dg.op(tags={PLACEMENT: "local"})
def count_streamed(records: list[dict[str, int]]) -> dict[str, Any]:
    return _counted(records)


@dg.op(name="count_streamed")
def count_streamed_on_the_cluster(records: list[dict[str, int]]) -> dict[str, Any]:
    return _counted(records)


@dg.job(executor_def=async_executor)
def awaiting_stream_job() -> None:
    count_streamed_on_the_cluster(awaiting_producer().map(marks_streamed).collect())


@dg.job(executor_def=async_executor)
def busy_stream_job() -> None:
    count_streamed(busy_producer().map(marks_streamed).collect())


def awaiting_stream() -> dg.JobDefinition:
    return awaiting_stream_job


def busy_stream() -> dg.JobDefinition:
    return busy_stream_job


# -- a run process whose loop is held longer than the heartbeat timeout

HOLD_SECONDS = 5.0


@dg.op(tags={PLACEMENT: "local"})
async def holds_the_run_loop() -> int:
    time.sleep(HOLD_SECONDS)  # blocks the run's loop: its channels are not read meanwhile
    return os.getpid()


@dg.op
async def runs_on_a_worker(run_pid: int) -> int:
    await asyncio.sleep(0.01)
    assert os.getpid() != run_pid
    return os.getpid()


@dg.job(executor_def=async_executor)
def held_loop_job() -> None:
    runs_on_a_worker(holds_the_run_loop())


def held_loop() -> dg.JobDefinition:
    return held_loop_job


#: Larger than a socket's buffers: the run process reads it over many turns of its loop.
BIG_FRAME_CHARS = 40_000_000
HOLDING = {"marker_dir": dg.Field(str)}


@dg.op(tags={PLACEMENT: "local"}, config_schema=HOLDING)
async def announces_then_holds_the_run_loop(context: dg.OpExecutionContext) -> bool:
    """Once the other step runs on its worker, hold the run's loop."""
    markers = Path(context.op_config["marker_dir"])
    began = await _wait_for(markers / "began")
    (markers / "holding").touch()
    time.sleep(HOLD_SECONDS)  # blocks the run's loop: its channels are not read meanwhile
    return began


@dg.op(config_schema=HOLDING)
async def sends_a_big_frame_meanwhile(context: dg.OpExecutionContext) -> bool:
    """Once the run's loop is held, log an entry so large that the frame carrying it
    is still being read when the run's loop next checks for silent workers."""
    markers = Path(context.op_config["marker_dir"])
    (markers / "began").touch()
    holding = await _wait_for(markers / "holding")
    context.log.info("x" * BIG_FRAME_CHARS)
    return holding


@dg.job(executor_def=async_executor)
def big_frame_while_held() -> None:
    announces_then_holds_the_run_loop()
    sends_a_big_frame_meanwhile()


# -- steps that print, on the cluster's workers (compute logs)


@dg.job(executor_def=async_executor)
def printing_on_cluster_job() -> None:
    printing.print_and_gather()


def printing_on_cluster() -> dg.JobDefinition:
    return printing_on_cluster_job


# -- assets and an asset check, on the cluster's workers


@dg.asset
async def raw_numbers(context: dg.AssetExecutionContext) -> list[int]:
    await asyncio.sleep(0.01)
    context.add_output_metadata({"pid": os.getpid()})
    return list(range(WIDTH))


@dg.asset
def doubled(context: dg.AssetExecutionContext, raw_numbers: list[int]) -> list[int]:
    context.add_output_metadata({"pid": os.getpid()})
    return [2 * number for number in raw_numbers]


@dg.asset_check(asset=doubled)
def doubled_is_even(doubled: list[int]) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=all(number % 2 == 0 for number in doubled))


ASSETS_JOB = "assets_on_cluster"
asset_definitions = dg.Definitions(
    assets=[raw_numbers, doubled],
    asset_checks=[doubled_is_even],
    jobs=[dg.define_asset_job(ASSETS_JOB, executor_def=async_executor)],
)
assets_on_cluster_job = asset_definitions.resolve_job_def(ASSETS_JOB)


def assets_on_cluster() -> dg.JobDefinition:
    return assets_on_cluster_job
