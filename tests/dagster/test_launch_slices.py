"""A big fan-out is started a slice at a time, so steps whose wait ended finish while
the rest are still starting: the steps alive at once stay few (issue 19's memory)."""

import asyncio
import threading

import dagster as dg

from dagloop.dagster import async_executor
from dagloop.dagster.orchestrator import LAUNCH_SLICE
from tests.dagster.conftest import run_job

WIDTH = 6 * LAUNCH_SLICE


class InFlight:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.now = 0
        self.peak = 0
        self.entered = 0

    def enter(self) -> None:
        with self._lock:
            self.now += 1
            self.entered += 1
            self.peak = max(self.peak, self.now)

    def leave(self) -> None:
        with self._lock:
            self.now -= 1


IN_FLIGHT = InFlight()


@dg.op(out=dg.DynamicOut(int))
def spread():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def one_turn(item: int) -> int:
    IN_FLIGHT.enter()
    await asyncio.sleep(0)  # its wait is over at the loop's next turn
    IN_FLIGHT.leave()
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
    IN_FLIGHT.__init__()  # type: ignore[misc]
    outcome = run_job(wide_fan_out, instance, outputs=("count",))
    assert outcome.success
    assert outcome.outputs["count"] == WIDTH
    assert IN_FLIGHT.entered == WIDTH
    # Started all in one turn, every step would be inside its body at once (WIDTH).
    assert IN_FLIGHT.peak <= 2 * LAUNCH_SLICE, IN_FLIGHT.peak
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
