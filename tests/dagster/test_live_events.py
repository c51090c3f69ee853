"""Issue 2: events reach the caller live, while other steps are still running."""

import asyncio
import threading

import dagster as dg
from dagster._core.execution.api import execute_run_iterator  # test-only: the raw stream

from dagloop.dagster import async_executor

RELEASE = threading.Event()


@dg.op
async def quick() -> int:
    return 1


@dg.op
async def held_until_caller_saw_quick() -> bool:
    # Released by the test only once it has *received* quick's STEP_SUCCESS; if events
    # were buffered until the end of the run, this would time out and fail.
    if not await asyncio.to_thread(RELEASE.wait, 30):
        raise TimeoutError("the caller never received quick's STEP_SUCCESS while we ran")
    return True


@dg.job(executor_def=async_executor)
def live_job():
    quick()
    held_until_caller_saw_quick()


def test_events_stream_while_steps_run(ephemeral_instance: dg.DagsterInstance) -> None:
    RELEASE.clear()
    recon = dg.reconstructable(live_job)
    run = ephemeral_instance.create_run_for_job(live_job)
    seen: list[str] = []
    for event in execute_run_iterator(recon, run, ephemeral_instance):
        if event.event_type == dg.DagsterEventType.STEP_SUCCESS:
            seen.append(event.step_key or "")
            if event.step_key == "quick":
                RELEASE.set()
    assert seen == ["quick", "held_until_caller_saw_quick"]
