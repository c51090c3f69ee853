"""A big fan-out is started a slice at a time, so steps whose wait ended finish while
the rest are still starting: the steps alive at once stay few (issue 19's memory)."""

import asyncio

import dagster as dg

from dagloop.dagster import async_executor
from dagloop.dagster.orchestrator import LAUNCH_SLICE
from tests.dagster.conftest import Gauge, run_job

WIDTH = 6 * LAUNCH_SLICE


IN_FLIGHT = Gauge()


@dg.op(out=dg.DynamicOut(int))
def spread():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def one_turn(item: int) -> int:
    IN_FLIGHT.enter("body")
    await asyncio.sleep(0)  # its wait is over at the loop's next turn
    IN_FLIGHT.leave("body")
    return item


@dg.op
def count(items: list[int]) -> int:
    return len(items)


@dg.job(executor_def=async_executor)
def wide_fan_out():
    count(spread().map(one_turn).collect())


def test_a_wide_fan_out_finishes_steps_while_it_starts_others(
    instance: dg.DagsterInstance,
) -> None:
    IN_FLIGHT.reset()
    outcome = run_job(wide_fan_out, instance, outputs=("count",))
    assert outcome.success
    assert outcome.outputs["count"] == WIDTH
    assert IN_FLIGHT.entered["body"] == WIDTH
    # Started all in one turn, every step would be inside its body at once (WIDTH).
    assert IN_FLIGHT.peak["body"] <= 2 * LAUNCH_SLICE, IN_FLIGHT.peak
    starts = [
        i
        for i, e in enumerate(outcome.events)
        if e.event_type == dg.DagsterEventType.STEP_START and e.step_key.startswith("one_turn[")
    ]
    successes = [
        i
        for i, e in enumerate(outcome.events)
        if e.event_type == dg.DagsterEventType.STEP_SUCCESS and e.step_key.startswith("one_turn[")
    ]
    assert len(starts) == len(successes) == WIDTH
    assert successes[0] < starts[-1]
