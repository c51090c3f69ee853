"""Records of Dagster's managed Python loggers (`dg.get_dagster_logger()`, and the
instance's `managed_python_loggers`) logged by a step's code go to that step's own log,
once, however many steps are in flight on the loop (issue 19).

Dagster attaches each step's handler to those loggers while the step's user code runs;
with many steps in flight in one process every record went to every step in flight
(and attaching and detaching cost O(steps in flight) each).

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import asyncio
import logging
import threading

import dagster as dg

from dagloop.dagster import async_executor
from tests.dagster.conftest import run_job

WIDTH = 30
ET = dg.DagsterEventType


@dg.op(out=dg.DynamicOut(int))
def fan_out():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def logs_through_python(item: int) -> int:
    await asyncio.sleep(0.2)  # every mapped step is in flight at once
    dg.get_dagster_logger().info(f"python record {item}")
    await asyncio.sleep(0.2)
    return item


@dg.op
def logs_from_sync(item: int) -> int:
    threading.Event().wait(0.1)
    dg.get_dagster_logger().warning(f"sync record {item}")
    return item


@dg.op
def total(items: list[int], more: list[int]) -> int:
    return sum(items) + sum(more)


@dg.job(executor_def=async_executor)
def python_logging_job():
    items = fan_out()
    total(items.map(logs_through_python).collect(), items.map(logs_from_sync).collect())


def test_each_python_record_is_logged_once_by_its_own_step(instance: dg.DagsterInstance) -> None:
    outcome = run_job(python_logging_job, instance)
    assert outcome.success
    records = [
        r
        for r in instance.all_logs(outcome.run_id)
        if r.user_message and "record " in r.user_message and r.dagster_event is None
    ]
    by_message = {}
    for record in records:
        by_message.setdefault(record.user_message, []).append(record.step_key)
    expected = {f"python record {i}": f"logs_through_python[{i}]" for i in range(WIDTH)}
    expected |= {f"sync record {i}": f"logs_from_sync[{i}]" for i in range(WIDTH)}
    assert {message: steps for message, steps in by_message.items()} == {
        message: [step] for message, step in expected.items()
    }
    # Nothing stays attached to the managed loggers after the run.
    assert not [h for h in logging.getLogger("dagster").handlers if "Dagster" in type(h).__name__]
