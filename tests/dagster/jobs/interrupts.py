"""Jobs whose synchronous steps are interrupted while doing realistic work: logging
(`context.log` and a `logging` handler), a Lock-guarded counter, `queue` put/get,
`sqlite3`, the filesystem IO manager, generator ops yielding `DynamicOutput`s.

Module-level so that `dg.reconstructable` and `dagster job execute -m` can load them.
The locks the work takes are module-level too: after a run, `held_locks()` says which
of them is still held by nobody running (an interrupt that landed between an acquire
and its release would leave one held for ever).
"""

import asyncio
import json
import logging
import os
import queue
import sqlite3
import threading
import time
from typing import Any

import dagster as dg

from dagloop.dagster import STEP_TIMEOUT_TAG, async_executor

#: Set once a step of the job is running.
STARTED = threading.Event()

COUNTER_LOCK = threading.Lock()
COUNTER = [0]
HANDOFF: "queue.Queue[int]" = queue.Queue()


class _CountingHandler(logging.Handler):
    """A handler doing a little work under the handler's lock, as real ones do."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.count += len(record.getMessage()) > 0


WORK_HANDLER = _CountingHandler()
WORK_LOG = logging.getLogger("dagloop.tests.interrupts.work")
WORK_LOG.setLevel(logging.INFO)
WORK_LOG.addHandler(WORK_HANDLER)
WORK_LOG.propagate = False


def held_locks(timeout: float = 2.0) -> list[str]:
    """The locks this module's work takes that cannot be acquired within `timeout`."""
    locks: dict[str, Any] = {
        "counter lock": COUNTER_LOCK,
        "queue mutex": HANDOFF.mutex,
        "work log handler lock": WORK_HANDLER.lock,
        "logging module lock": logging._lock,  # type: ignore[attr-defined]
    }
    for name in ("", "dagster"):
        for index, handler in enumerate(logging.getLogger(name).handlers):
            if handler.lock is not None:
                locks[f"handler {index} of logger {name or 'root'!r}"] = handler.lock
    held = []
    for name, lock in locks.items():
        if lock.acquire(timeout=timeout):
            lock.release()
        else:
            held.append(name)
    return held


def realistic_work(context: dg.OpExecutionContext, item: int, rounds: int) -> None:
    """What a synchronous op does between its own lines: each call below holds a lock
    somewhere (a handler's, the counter's, the queue's, sqlite3's own)."""
    for round_ in range(rounds):
        context.log.debug(f"item {item} round {round_}")
        WORK_LOG.info("item %d round %d", item, round_)
        with COUNTER_LOCK:
            COUNTER[0] += 1
        HANDOFF.put(item)
        HANDOFF.get()
        with sqlite3.connect(":memory:") as db:
            db.execute("select ?", (item,)).fetchall()


# -- the stress job: terminated at random moments -----------------------------------------

#: Where `lock_audit` writes the locks still held when the run's resources are torn
#: down (every step has ended by then): for runs in a child process.
LOCK_REPORT_ENV = "DAGLOOP_TEST_LOCK_REPORT"


@dg.resource
def lock_audit(_: dg.InitResourceContext):
    try:
        yield None
    finally:
        report = os.environ.get(LOCK_REPORT_ENV)
        if report:
            with open(report, "w", encoding="utf8") as f:
                json.dump(held_locks(), f)


@dg.op(out=dg.DynamicOut(int), required_resource_keys={"lock_audit"})
def sync_producer(context: dg.OpExecutionContext):
    """A sync generator op: yields DynamicOutputs in a loop, each stored by the
    filesystem IO manager, with realistic work between them."""
    STARTED.set()
    for i in range(24):
        realistic_work(context, i, rounds=2)
        time.sleep(0.1)
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(out=dg.DynamicOut(int))
def sync_chatty_generator(context: dg.OpExecutionContext):
    """Yields quickly and logs between yields: almost all its time is Dagster's."""
    for i in range(120):
        context.log.info(f"yielding {i}")
        time.sleep(0.02)
        yield dg.DynamicOutput(i, mapping_key=f"c{i}")


@dg.op
def sync_worker(context: dg.OpExecutionContext, item: int) -> int:
    for _ in range(10 + item % 15):
        realistic_work(context, item, rounds=1)
        time.sleep(0.03)
    return item


@dg.op
async def async_worker(item: int) -> int:
    await asyncio.sleep(0.05 * (item % 25))
    return item


@dg.op
def count_sync(values: list[int]) -> int:
    return len(values)


@dg.op
async def count_async(values: list[int]) -> int:
    return len(values)


@dg.job(
    executor_def=async_executor.configured({"sync_threads": 6, "termination_grace_seconds": 3.0}),
    resource_defs={"lock_audit": lock_audit},
)
def stress_job():
    count_sync(sync_producer().map(sync_worker).collect())
    count_async(sync_chatty_generator().map(async_worker).collect())


# -- step budgets: a sync generator op over its budget beside steps that must succeed ----


@dg.op(out=dg.DynamicOut(int), tags={STEP_TIMEOUT_TAG: "0.5"})
def over_budget_generator(context: dg.OpExecutionContext):
    """Never ends on its own: yields and works until its budget runs out."""
    STARTED.set()
    i = 0
    while True:
        realistic_work(context, i, rounds=1)
        yield dg.DynamicOutput(i, mapping_key=str(i))
        i += 1


@dg.op
def sleeps_two_seconds() -> int:
    time.sleep(2.0)
    return 2


@dg.op
async def waits_a_second() -> int:
    await asyncio.sleep(1.0)
    return 1


@dg.op
def takes_each(item: int) -> int:
    return item


@dg.job(executor_def=async_executor.configured({"termination_grace_seconds": 3.0}))
def over_budget_job():
    over_budget_generator().map(takes_each)
    sleeps_two_seconds()
    waits_a_second()


@dg.job(executor_def=async_executor.configured({"termination_grace_seconds": 3.0}))
def six_over_budget_job():
    """The reliability probe's case: six sync generator ops over a 0.5 s budget beside a
    sync op that sleeps 2 s and an async op, which must both succeed."""
    for index in range(6):
        over_budget_generator.alias(f"gen_{index}")()
    sleeps_two_seconds()
    waits_a_second()


@dg.op(
    out=dg.DynamicOut(int),
    tags={STEP_TIMEOUT_TAG: "0.5"},
    retry_policy=dg.RetryPolicy(max_retries=2),
)
def over_budget_then_quick(context: dg.OpExecutionContext):
    """Over budget on its first attempt; later attempts finish at once."""
    if context.retry_number == 0:
        while True:
            realistic_work(context, 0, rounds=1)
            time.sleep(0.01)
    yield dg.DynamicOutput(1, mapping_key="one")


@dg.job(executor_def=async_executor.configured({"termination_grace_seconds": 3.0}))
def over_budget_retry_job():
    over_budget_then_quick().map(takes_each)
    sleeps_two_seconds()


@dg.op(out=dg.DynamicOut(int))
def eight() -> Any:
    for i in range(8):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op(tags={STEP_TIMEOUT_TAG: "3"})
def one_second_of_work(context: dg.OpExecutionContext, item: int) -> int:
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        realistic_work(context, item, rounds=1)
        time.sleep(0.02)
    return item


@dg.job(executor_def=async_executor.configured({"sync_threads": 2}))
def waits_for_threads_job():
    eight().map(one_second_of_work)


# -- steps waiting for a thread when the run is terminated -------------------------------


@dg.op(out=dg.DynamicOut(int))
def twelve() -> Any:
    for i in range(12):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
def busy_for_a_while(item: int) -> int:
    STARTED.set()
    for _ in range(200):
        time.sleep(0.05)
    return item


@dg.job(executor_def=async_executor.configured({"sync_threads": 2}))
def queued_sync_steps_job():
    twelve().map(busy_for_a_while)


# -- a step reported twice (as a bug in step code would) ---------------------------------


@dg.success_hook
def reports_success_again(context: dg.HookContext) -> None:
    """Logs a second STEP_SUCCESS for the step it hooks, through Dagster's own event
    API (private: only a test fabricates such a bug)."""
    from dagster._core.events import DagsterEvent
    from dagster._core.execution.plan.objects import StepSuccessData

    step_context = context._step_execution_context  # type: ignore[attr-defined]
    DagsterEvent.step_success_event(step_context, StepSuccessData(duration_ms=1.0))


@dg.op
def reported_twice() -> int:
    return 1


@dg.job(executor_def=async_executor)
def duplicating_hook_job():
    reported_twice.with_hooks({reports_success_again})()


@dg.job(executor_def=async_executor)
def plain_job():
    """The executor unconfigured: run config sets its config."""
    reported_twice()


defs = dg.Definitions(
    jobs=[
        stress_job,
        over_budget_job,
        six_over_budget_job,
        over_budget_retry_job,
        waits_for_threads_job,
        queued_sync_steps_job,
        duplicating_hook_job,
        plain_job,
    ]
)
