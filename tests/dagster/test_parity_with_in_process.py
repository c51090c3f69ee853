"""Issue 5: faults give the same events and run outcome as Dagster's in-process executor.

Each case is one graph built into two jobs, one per executor; the tests compare, per
step, the sequence of event types, and the run-level outcome.
"""

import asyncio
from collections import defaultdict
from collections.abc import Iterator

import dagster as dg
import pytest

from dagloop.dagster import async_executor
from tests.dagster.conftest import run_job

E = dg.DagsterEventType


@dg.op
async def ok_async() -> int:
    await asyncio.sleep(0.01)
    return 1


@dg.op
async def raises_system_exit(value: int) -> int:
    await asyncio.sleep(0)
    raise SystemExit(3)


@dg.op
async def raises_stray_cancelled(value: int) -> int:
    await asyncio.sleep(0)
    raise asyncio.CancelledError("not a real cancellation")


@dg.op
def sync_raises_keyboard_interrupt(value: int) -> int:
    raise KeyboardInterrupt


@dg.op
async def async_raises_keyboard_interrupt(value: int) -> int:
    await asyncio.sleep(0)
    raise KeyboardInterrupt


@dg.graph
def system_exit_graph():
    raises_system_exit(ok_async())


@dg.graph
def stray_cancelled_graph():
    raises_stray_cancelled(ok_async())


@dg.graph
def keyboard_interrupt_graph():
    async_raises_keyboard_interrupt(ok_async())


@dg.graph
def sync_keyboard_interrupt_graph():
    sync_raises_keyboard_interrupt(ok_async())


class BrokenStartResource(dg.ConfigurableResource):
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        raise ConnectionRefusedError("database is down")


class BrokenTeardownResource(dg.ConfigurableResource):
    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        raise RuntimeError("could not close the pool")


@dg.op
async def needs_db(db: BrokenStartResource) -> int:
    return 1


@dg.op
async def needs_pool(pool: BrokenTeardownResource) -> int:
    return 1


@dg.graph
def resource_init_graph():
    needs_db()


@dg.graph
def resource_teardown_graph():
    needs_pool()


class FailingOnWrite(dg.IOManager):
    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        raise OSError("disk full")

    def load_input(self, context: dg.InputContext) -> object:
        raise AssertionError("never loaded")


class FailingOnRead(dg.IOManager):
    def __init__(self) -> None:
        self.values: dict[tuple[str, ...], object] = {}

    def handle_output(self, context: dg.OutputContext, obj: object) -> None:
        self.values[tuple(context.get_identifier())] = obj

    def load_input(self, context: dg.InputContext) -> object:
        raise OSError("object store unavailable")


@dg.io_manager
def failing_on_write(_: dg.InitResourceContext) -> Iterator[FailingOnWrite]:
    yield FailingOnWrite()


@dg.io_manager
def failing_on_read(_: dg.InitResourceContext) -> Iterator[FailingOnRead]:
    yield FailingOnRead()


@dg.op
async def consume(value: int) -> int:
    return value


@dg.graph
def io_graph():
    consume(ok_async())


# `reconstructable` needs module-level functions that build the jobs.
def system_exit_dagloop():
    return system_exit_graph.to_job(executor_def=async_executor)


def system_exit_in_process():
    return system_exit_graph.to_job(executor_def=dg.in_process_executor)


def stray_cancelled_dagloop():
    return stray_cancelled_graph.to_job(executor_def=async_executor)


def stray_cancelled_in_process():
    return stray_cancelled_graph.to_job(executor_def=dg.in_process_executor)


def keyboard_dagloop():
    return keyboard_interrupt_graph.to_job(executor_def=async_executor)


def keyboard_in_process():
    return keyboard_interrupt_graph.to_job(executor_def=dg.in_process_executor)


def sync_keyboard_dagloop():
    return sync_keyboard_interrupt_graph.to_job(executor_def=async_executor)


def sync_keyboard_in_process():
    return sync_keyboard_interrupt_graph.to_job(executor_def=dg.in_process_executor)


def resource_init_dagloop():
    return resource_init_graph.to_job(
        executor_def=async_executor, resource_defs={"db": BrokenStartResource()}
    )


def resource_init_in_process():
    return resource_init_graph.to_job(
        executor_def=dg.in_process_executor, resource_defs={"db": BrokenStartResource()}
    )


def resource_teardown_dagloop():
    return resource_teardown_graph.to_job(
        executor_def=async_executor, resource_defs={"pool": BrokenTeardownResource()}
    )


def resource_teardown_in_process():
    return resource_teardown_graph.to_job(
        executor_def=dg.in_process_executor, resource_defs={"pool": BrokenTeardownResource()}
    )


def io_write_dagloop():
    return io_graph.to_job(
        executor_def=async_executor, resource_defs={"io_manager": failing_on_write}
    )


def io_write_in_process():
    return io_graph.to_job(
        executor_def=dg.in_process_executor, resource_defs={"io_manager": failing_on_write}
    )


def io_read_dagloop():
    return io_graph.to_job(
        executor_def=async_executor, resource_defs={"io_manager": failing_on_read}
    )


def io_read_in_process():
    return io_graph.to_job(
        executor_def=dg.in_process_executor, resource_defs={"io_manager": failing_on_read}
    )


CASES = {
    "SystemExit": (system_exit_dagloop, system_exit_in_process),
    "stray CancelledError": (stray_cancelled_dagloop, stray_cancelled_in_process),
    "KeyboardInterrupt (async op)": (keyboard_dagloop, keyboard_in_process),
    "KeyboardInterrupt (sync op)": (sync_keyboard_dagloop, sync_keyboard_in_process),
    "resource init failure": (resource_init_dagloop, resource_init_in_process),
    "resource teardown failure": (resource_teardown_dagloop, resource_teardown_in_process),
    "IO manager write failure": (io_write_dagloop, io_write_in_process),
    "IO manager read failure": (io_read_dagloop, io_read_in_process),
}


def _shape(events: list[dg.DagsterEvent]) -> tuple[dict[str, list[str]], list[str]]:
    per_step: dict[str, list[str]] = defaultdict(list)
    run_level: list[str] = []
    for event in events:
        if event.event_type == E.ENGINE_EVENT:
            continue  # each executor describes itself in its own words
        if event.step_key is None:
            run_level.append(event.event_type_value)
        else:
            per_step[event.step_key].append(event.event_type_value)
    return dict(per_step), run_level


@pytest.mark.parametrize("case", list(CASES))
def test_same_events_and_outcome_as_in_process(case: str, instance: dg.DagsterInstance) -> None:
    dagloop_job, in_process_job = CASES[case]
    ours = run_job(dagloop_job, instance)
    theirs = run_job(in_process_job, instance)

    assert ours.success == theirs.success
    assert ours.status == theirs.status
    our_steps, our_run = _shape(ours.events)
    their_steps, their_run = _shape(theirs.events)
    assert our_steps == their_steps
    assert our_run == their_run
    # The failure is the same error for the same step.
    our_errors = {
        e.step_key: e.step_failure_data.error.cls_name for e in ours.of_type(E.STEP_FAILURE)
    }
    their_errors = {
        e.step_key: e.step_failure_data.error.cls_name for e in theirs.of_type(E.STEP_FAILURE)
    }
    assert our_errors == their_errors
