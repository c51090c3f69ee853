"""Jobs of the Dask stress (`dask_stress.py`): steps on a Dask cluster, terminated, their
workers killed, or over their budgets.

Every cluster step writes a marker file when its body starts, one per execution, in
`$DAGLOOP_STRESS_MARKERS/<run id>/` (the variable is inherited by the workers of
`processes: K` and set for the CLI cluster's workers when it starts): a body that ran
more often than the event log shows the step started was re-run silently.

The executor is left unconfigured: the stress passes `dask: ...` and
`termination_grace_seconds` in the run config. Producer and collectors stay on the
run's loop (`dagloop/placement: local`); the mapped steps go to the cluster.
"""

import asyncio
import os
import time
import uuid

import dagster as dg

from dagloop.dagster import STEP_TIMEOUT_TAG, async_executor

MARKERS_ENV = "DAGLOOP_STRESS_MARKERS"
LOCAL = {"dagloop/placement": "local"}
#: Mapped steps of each kind per run of the termination job.
ITEMS = 40
#: Steps of each kind over their budget per run of the budget job.
OVER_BUDGET = 6
BUDGET_SECONDS = "0.5"


def mark(context: dg.OpExecutionContext) -> None:
    """One marker per execution of a step's body."""
    root = os.environ.get(MARKERS_ENV)
    if not root:
        return
    where = os.path.join(root, context.run_id)
    os.makedirs(where, exist_ok=True)
    mapping_key = context.get_mapping_key()
    step_key = f"{context.op_handle}[{mapping_key}]" if mapping_key else str(context.op_handle)
    name = f"{context.retry_number}@{os.getpid()}@{uuid.uuid4().hex[:8]}@{step_key}"
    with open(os.path.join(where, name), "w"):
        pass


@dg.op(out=dg.DynamicOut(int), tags=LOCAL)
def items() -> dg.DynamicOutput:  # type: ignore[misc]
    for i in range(ITEMS):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
def sync_step(context: dg.OpExecutionContext, item: int) -> int:
    """Logs and sleeps in short slices: interruptible at its next line."""
    mark(context)
    for round_ in range(5 + item % 20):
        context.log.debug(f"item {item} round {round_}")
        time.sleep(0.05)
    return item


@dg.op
async def async_step(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    await asyncio.sleep(0.1 * (item % 20))
    return item


@dg.op(tags=LOCAL)
def count_sync(values: list[int]) -> int:
    return len(values)


@dg.op(tags=LOCAL)
def count_async(values: list[int]) -> int:
    return len(values)


@dg.job(executor_def=async_executor)
def dask_stress_job() -> None:
    mapped = items()
    count_sync(mapped.map(sync_step).collect())
    count_async(mapped.map(async_step).collect())


@dg.op(out=dg.DynamicOut(int), tags=LOCAL)
def few_items() -> dg.DynamicOutput:  # type: ignore[misc]
    for i in range(OVER_BUDGET):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(tags={STEP_TIMEOUT_TAG: BUDGET_SECONDS})
def sync_over_budget(context: dg.OpExecutionContext, item: int) -> int:
    """Never ends on its own: logs and sleeps until its budget runs out."""
    mark(context)
    while True:
        context.log.debug(f"item {item} still working")
        time.sleep(0.01)


@dg.op(tags={STEP_TIMEOUT_TAG: BUDGET_SECONDS})
async def async_over_budget(context: dg.OpExecutionContext, item: int) -> int:
    mark(context)
    await asyncio.sleep(3600)
    return item


@dg.op(tags={STEP_TIMEOUT_TAG: "10"})
def within_budget(context: dg.OpExecutionContext, item: int) -> int:
    """Must succeed: well within its budget, beside the steps over theirs."""
    mark(context)
    time.sleep(0.3)
    return item


@dg.job(executor_def=async_executor)
def dask_budget_job() -> None:
    mapped = few_items()
    mapped.map(sync_over_budget)
    mapped.map(async_over_budget)
    mapped.map(within_budget)


defs = dg.Definitions(jobs=[dask_stress_job, dask_budget_job])
