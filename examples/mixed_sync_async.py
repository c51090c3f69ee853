"""Async and sync ops in one job: I/O-bound async ops share the event loop, blocking
sync ops run in worker threads beside them, so neither waits for the other.

    dagster job execute -f examples/mixed_sync_async.py -j mixed_job

Sizes come from the environment: DAGLOOP_MIXED_ITEMS (default 20) items are
"fetched" (an async sleep of DAGLOOP_MIXED_SLEEP seconds, default 0.5), each "parsed"
by a blocking sync op (time.sleep of the same length), then summarised.
"""

import os
import time

import anyio
import dagster as dg

from dagloop.dagster import async_executor

ITEMS = int(os.environ.get("DAGLOOP_MIXED_ITEMS", "20"))
SLEEP = float(os.environ.get("DAGLOOP_MIXED_SLEEP", "0.5"))


@dg.op
def load_settings() -> dict:
    """Sync op (runs in a worker thread): e.g. reading a config file."""
    time.sleep(SLEEP)
    return {"items": ITEMS, "prefix": "item"}


@dg.op(out=dg.DynamicOut(str))
async def list_items(settings: dict):
    """Async generator fanning out one dynamic output per item."""
    for i in range(settings["items"]):
        yield dg.DynamicOutput(f"{settings['prefix']}_{i}", mapping_key=f"i{i}")


@dg.op
async def fetch(context: dg.OpExecutionContext, name: str) -> dict:
    """I/O-bound async op: all of these wait concurrently on the one event loop."""
    await anyio.sleep(SLEEP)
    context.log.debug(f"fetched {name}")
    return {"name": name, "size": len(name)}


@dg.op
def parse(record: dict) -> int:
    """Blocking sync op: runs in a worker thread, never blocks the event loop."""
    time.sleep(SLEEP)
    return record["size"]


@dg.op
async def summarize(context: dg.OpExecutionContext, sizes: list[int]) -> dict:
    summary = {"items": len(sizes), "total_size": sum(sizes)}
    context.log.info(f"summary: {summary}")
    return summary


@dg.job(executor_def=async_executor)
def mixed_job():
    summarize(list_items(load_settings()).map(fetch).map(parse).collect())


defs = dg.Definitions(jobs=[mixed_job])
