"""Issue 2, item 2: sync and async ops mix, and sync work never blocks the loop."""

import asyncio
import threading
import time

import dagster as dg

from dagloop.dagster import async_executor
from tests.dagster.conftest import run_job

ASYNC_OPS = 50


@dg.op
async def async_source() -> int:
    await asyncio.sleep(0.01)
    return 20


@dg.op
def sync_double(value: int) -> int:
    return value * 2


@dg.op
async def async_add_one(value: int) -> int:
    await asyncio.sleep(0.01)
    return value + 1


@dg.job(executor_def=async_executor)
def async_sync_async_job():
    async_add_one(sync_double(async_source()))


def test_values_flow_async_to_sync_to_async(instance: dg.DagsterInstance) -> None:
    outcome = run_job(async_sync_async_job, instance, outputs=("async_add_one",))
    assert outcome.success
    assert outcome.outputs["async_add_one"] == 41


# -- a blocking sync op beside 50 sleeping async ops -----------------------------------


@dg.op(out=dg.DynamicOut(int))
def fan() -> object:
    for i in range(ASYNC_OPS):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def nap(context: dg.OpExecutionContext, item: int) -> dict:
    begin = time.time()
    await asyncio.sleep(1.0)
    return {"begin": begin, "end": time.time(), "loop_thread": threading.get_ident()}


@dg.op
def block_thread(context: dg.OpExecutionContext) -> dict:
    begin = time.time()
    time.sleep(2.0)
    return {"begin": begin, "end": time.time(), "thread": threading.get_ident()}


@dg.op
def summarize(naps: list, blocker: dict) -> dict:
    return {"naps": naps, "blocker": blocker}


@dg.job(executor_def=async_executor)
def blocking_beside_async_job():
    summarize(fan().map(nap).collect(), block_thread())


def test_sync_op_runs_in_a_thread_while_async_ops_proceed(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    started = time.perf_counter()
    outcome = run_job(blocking_beside_async_job, ephemeral_instance, outputs=("summarize",))
    wall = time.perf_counter() - started
    assert outcome.success
    summary = outcome.outputs["summarize"]
    naps, blocker = summary["naps"], summary["blocker"]
    assert len(naps) == ASYNC_OPS
    # The sync op ran on a worker thread, not on the loop's thread.
    assert blocker["thread"] != naps[0]["loop_thread"]
    # Whole 1 s naps began and ended while the sync op was sleeping its 2 s: impossible
    # if the sync op had held the loop.
    inside = [n for n in naps if blocker["begin"] < n["begin"] and n["end"] < blocker["end"]]
    assert inside, "no async op ran to completion while the sync op was blocking"
    # Serialised, this is 2 s + 50 x 1 s; overlapped it is about max(2, 1) plus Dagster's
    # own bookkeeping (~25 ms a step in memory). Loose bound for noisy machines.
    assert wall < 10


# -- user IO managers are synchronous code: they run off the loop ------------------------


class ThreadRecordingIOManager(dg.IOManager):
    """Stands in for an upload to an object store: blocking, synchronous."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}
        self.threads: dict[str, int] = {}

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        self.threads[context.step_key] = threading.get_ident()
        self.values[context.step_key] = obj

    def load_input(self, context: dg.InputContext) -> object:
        return self.values[context.upstream_output.step_key]


@dg.io_manager
def recording_io_manager(_: dg.InitResourceContext) -> ThreadRecordingIOManager:
    return RECORDER


RECORDER = ThreadRecordingIOManager()


@dg.op
async def stored_by_user_io_manager() -> int:
    await asyncio.sleep(0)
    return threading.get_ident()


@dg.job(executor_def=async_executor, resource_defs={"io_manager": recording_io_manager})
def user_io_manager_job():
    stored_by_user_io_manager()


def test_async_step_with_a_user_io_manager_stores_off_the_loop(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    RECORDER.values.clear()
    RECORDER.threads.clear()
    outcome = run_job(user_io_manager_job, ephemeral_instance)
    assert outcome.success
    loop_thread = RECORDER.values["stored_by_user_io_manager"]
    # The op's coroutine ran on the loop; the IO manager's blocking write did not.
    assert RECORDER.threads["stored_by_user_io_manager"] != loop_thread
