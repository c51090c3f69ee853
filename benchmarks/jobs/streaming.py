"""A slow dynamic op feeding mapped steps under a tag concurrency limit.

The producer yields ``items`` outputs, one every ``interval`` seconds; each mapped step
sleeps ``work`` seconds; at most ``limit`` mapped steps run at once (a tag concurrency
limit). Everything is run config, so one module-level job serves every case:
``run_config(stream=True, ...)`` turns streaming on with the executor's
``step_dependency_config``.
"""

import asyncio
from typing import Any

import dagster as dg

from dagloop.dagster import async_executor


@dg.op(out=dg.DynamicOut(int), config_schema={"items": int, "interval": float})
async def produce(context: dg.OpExecutionContext):
    interval = context.op_config["interval"]
    for i in range(context.op_config["items"]):
        if interval:
            await asyncio.sleep(interval)
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(tags={"lane": "mapped"}, config_schema={"work": float})
async def work(context: dg.OpExecutionContext, item: int) -> int:
    if context.op_config["work"]:
        await asyncio.sleep(context.op_config["work"])
    return item


@dg.op
def total(values: list[int]) -> int:
    return len(values)


@dg.job(executor_def=async_executor)
def streaming_fan_out():
    total(produce().map(work).collect())


def run_config(
    stream: bool, items: int, interval: float, work_s: float, limit: int
) -> dict[str, Any]:
    executor: dict[str, Any] = {
        "tag_concurrency_limits": [{"key": "lane", "value": "mapped", "limit": limit}],
        "step_dependency_config": {"require_upstream_step_success": not stream},
    }
    return {
        "execution": {"config": executor},
        "ops": {
            "produce": {"config": {"items": items, "interval": interval}},
            "work": {"config": {"work": work_s}},
        },
    }
