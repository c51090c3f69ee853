"""Jobs for streaming fan-out: mapped steps start while their dynamic op still yields."""

import asyncio
import os
import threading
import time

import dagster as dg

from dagloop.dagster import STREAM_TAG, async_executor

#: The executor config that streams every producer.
STREAM_ALL = {"step_dependency_config": {"require_upstream_step_success": False}}
LANE = {"tag_concurrency_limits": [{"key": "lane", "value": "mapped", "limit": 3}]}
#: Set once a mapped step runs (termination tests).
MAPPED_STARTED = threading.Event()
ITEMS = 12


@dg.op(out=dg.DynamicOut(int))
async def slow_producer():
    for i in range(ITEMS):
        await asyncio.sleep(0.15)
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(tags={"lane": "mapped"})
async def mapped(item: int) -> int:
    MAPPED_STARTED.set()
    await asyncio.sleep(0.2)
    return item


@dg.op
def count(values: list[int]) -> int:
    return len(values)


@dg.op
def after_producer(values: list[int]) -> int:
    return sum(values)


@dg.job(executor_def=async_executor.configured({**STREAM_ALL, **LANE}))
def streaming_job():
    count(slow_producer().map(mapped).collect())


@dg.job(executor_def=async_executor.configured(LANE))
def not_streaming_job():
    count(slow_producer().map(mapped).collect())


# -- a producer that never awaits: it holds the loop between its outputs -----------------


@dg.op(out=dg.DynamicOut(int))
async def busy_producer():
    for i in range(ITEMS):
        time.sleep(0.05)  # synchronous work between outputs, no await anywhere
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def busy_producer_job():
    count(busy_producer().map(mapped).collect())


# -- one producer streams by its tag, the other does not ---------------------------------


@dg.op(out=dg.DynamicOut(int), tags={STREAM_TAG: "true"})
async def tagged_producer():
    for i in range(6):
        await asyncio.sleep(0.15)
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(out=dg.DynamicOut(int))
async def untagged_producer():
    for i in range(6):
        await asyncio.sleep(0.15)
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def mapped_b(item: int) -> int:
    await asyncio.sleep(0.05)
    return item


@dg.job(executor_def=async_executor.configured({"max_concurrent": 4}))
def tag_streaming_job():
    count.alias("count_tagged")(tagged_producer().map(mapped).collect())
    count.alias("count_untagged")(untagged_producer().map(mapped_b).collect())


# -- the producer fails after yielding some outputs --------------------------------------


@dg.op(out=dg.DynamicOut(int))
async def fails_midway():
    for i in range(4):
        await asyncio.sleep(0.1)
        yield dg.DynamicOutput(i, mapping_key=str(i))
    await asyncio.sleep(0.6)  # the mapped steps of the four outputs run meanwhile
    raise dg.Failure("the producer broke after four outputs")


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def producer_fails_job():
    after_producer(fails_midway().map(mapped).collect())


# -- the producer is retried and yields the same, fewer or different keys ----------------


@dg.op(
    out=dg.DynamicOut(int),
    config_schema={"first": [str], "second": [str]},
    retry_policy=dg.RetryPolicy(max_retries=1),
)
async def retried_producer(context: dg.OpExecutionContext):
    keys = context.op_config["first" if context.retry_number == 0 else "second"]
    for index, key in enumerate(keys):
        await asyncio.sleep(0.1)
        yield dg.DynamicOutput(index, mapping_key=key)
    if context.retry_number == 0:
        await asyncio.sleep(0.5)  # the first attempt's mapped steps start meanwhile
        raise dg.Failure("first attempt fails after its outputs")


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def retried_producer_job():
    count(retried_producer().map(mapped).collect())


# -- two dynamic outputs on one op, an empty and a skipped optional one -------------------


@dg.op(out={"left": dg.DynamicOut(int), "right": dg.DynamicOut(int)})
async def two_outputs():
    for i in range(3):
        await asyncio.sleep(0.1)
        yield dg.DynamicOutput(i, mapping_key=f"l{i}", output_name="left")
        yield dg.DynamicOutput(i * 10, mapping_key=f"r{i}", output_name="right")
    await asyncio.sleep(0.5)


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def two_outputs_job():
    left, right = two_outputs()
    count.alias("count_left")(left.map(mapped).collect())
    count.alias("count_right")(right.map(mapped_b).collect())


@dg.op(out=dg.DynamicOut(int))
def yields_nothing():
    yield from ()


@dg.op(out=dg.DynamicOut(int, is_required=False))
def skips_its_output():
    yield from ()


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def empty_outputs_job():
    count.alias("count_empty")(yields_nothing().map(mapped).collect())
    count.alias("count_skipped")(skips_its_output().map(mapped_b).collect())


# -- a mapped op that is itself a dynamic op ---------------------------------------------


@dg.op(out=dg.DynamicOut(int))
def inner_dynamic(item: int):
    for j in range(2):
        yield dg.DynamicOutput(item * 10 + j, mapping_key=str(j))


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def mapped_dynamic_op_job():
    slow_producer().map(inner_dynamic)


# -- chained maps stream together --------------------------------------------------------


@dg.op
async def then(item: int) -> int:
    await asyncio.sleep(0.05)
    return item


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def chained_maps_job():
    count(slow_producer().map(mapped).map(then).collect())


# -- a producer that fails on its first run only (re-execution from failure) --------------


@dg.op(out=dg.DynamicOut(int), config_schema={"flag": str})
async def fails_once(context: dg.OpExecutionContext):
    for i in range(ITEMS):
        await asyncio.sleep(0.05)
        yield dg.DynamicOutput(i, mapping_key=str(i))
        if i == 5 and not os.path.exists(context.op_config["flag"]):
            with open(context.op_config["flag"], "w", encoding="utf8") as f:
                f.write("failed once")
            time.sleep(0.3)  # let the mapped steps of the first six outputs run
            raise dg.Failure("the first run breaks after six outputs")


@dg.job(executor_def=async_executor.configured({**STREAM_ALL, **LANE}))
def fails_once_job():
    count(fails_once().map(mapped).collect())


# -- slow enough to watch in the UI -------------------------------------------------------


@dg.op(out=dg.DynamicOut(int))
async def watched_producer():
    for i in range(40):
        await asyncio.sleep(0.5)
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def watched_work(item: int) -> int:
    await asyncio.sleep(2.0)
    return item


@dg.job(executor_def=async_executor.configured(STREAM_ALL))
def ui_streaming_job():
    count(watched_producer().map(watched_work).collect())


@dg.op(out=dg.DynamicOut(int), tags={STREAM_TAG: "yes please"})
def badly_tagged_producer():
    yield dg.DynamicOutput(1, mapping_key="one")


@dg.job(executor_def=async_executor)
def badly_tagged_job():
    badly_tagged_producer().map(mapped)


defs = dg.Definitions(
    jobs=[
        streaming_job,
        not_streaming_job,
        tag_streaming_job,
        producer_fails_job,
        retried_producer_job,
        two_outputs_job,
        empty_outputs_job,
        mapped_dynamic_op_job,
        chained_maps_job,
        fails_once_job,
        badly_tagged_job,
        ui_streaming_job,
    ]
)
