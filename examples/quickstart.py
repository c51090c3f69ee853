"""The quickstart fan-out: an async producer, N mapped async ops, one collector.

Run it with `make demo`, `dg launch -f examples/quickstart.py --job fanout_job`, or
`dagster job execute -f examples/quickstart.py -j fanout_job`.
"""

import os

import anyio
import dagster as dg

from dagloop.dagster import async_executor

NUM_FANOUTS = int(os.environ.get("DAGLOOP_FANOUT", "300"))
SLEEP_SECONDS = float(os.environ.get("DAGLOOP_SLEEP", "3"))


@dg.op(out=dg.DynamicOut())
async def create_dynamic_outputs():
    for i in range(NUM_FANOUTS):
        yield dg.DynamicOutput(value=f"item_{i}", mapping_key=f"key_{i}")


@dg.op
async def process_item(context: dg.OpExecutionContext, item: str) -> str:
    context.log.info(f"{item}: sleeping {SLEEP_SECONDS} s")
    await anyio.sleep(SLEEP_SECONDS)
    return item


@dg.op
async def collect_results(context: dg.OpExecutionContext, results: list) -> int:
    context.log.info(f"collected {len(results)} results")
    return len(results)


@dg.job(executor_def=async_executor)
def fanout_job():
    collect_results(create_dynamic_outputs().map(process_item).collect())


defs = dg.Definitions(jobs=[fanout_job])
