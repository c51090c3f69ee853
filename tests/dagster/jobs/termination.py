"""Jobs for the termination, storage-failure, config-validation and blocked-loop tests.

Module-level so that `dg.reconstructable` and `dagster job execute -m` can load them.
"""

import asyncio
import os
import threading
import time

import dagster as dg

from dagloop.dagster import STEP_TIMEOUT_TAG, async_executor

#: Set by the tests to let a step blocked in C code go on (it is abandoned by then).
RELEASE = threading.Event()
#: Set once a step of the job is running.
STARTED = threading.Event()
#: What ran after the release, to check that nothing of it reached the run.
AFTER_RELEASE: list[str] = []


@dg.op
def log_every_second(context: dg.OpExecutionContext) -> int:
    """A sync op that logs once a second for 15 s: it must stop at termination."""
    STARTED.set()
    for i in range(15):
        context.log.info(f"tick {i}")
        time.sleep(1.0)
    return 15


@dg.job(executor_def=async_executor)
def sync_logger_job():
    log_every_second()


@dg.op
def blocked_in_c(context: dg.OpExecutionContext) -> int:
    """Blocked in one C call (a lock wait) that no Python-level interrupt can break."""
    STARTED.set()
    context.log.info("stuck before the release")
    RELEASE.wait(timeout=600)
    AFTER_RELEASE.append("blocked_in_c")
    context.log.info("still here after the release")
    return 1


@dg.op
async def waits_async() -> int:
    await asyncio.sleep(600)
    return 2


@dg.job(executor_def=async_executor.configured({"termination_grace_seconds": 1.0}))
def stuck_job():
    blocked_in_c()
    waits_async()


@dg.op(tags={STEP_TIMEOUT_TAG: "0.5"})
def sync_over_budget() -> int:
    for _ in range(600):
        time.sleep(0.05)
    return 1


@dg.op(tags={STEP_TIMEOUT_TAG: "0.5"})
def sync_stuck_over_budget(context: dg.OpExecutionContext) -> int:
    RELEASE.wait(timeout=600)
    AFTER_RELEASE.append("sync_stuck_over_budget")
    context.log.info("still here after the release")
    return 2


@dg.op
def sync_in_budget() -> int:
    time.sleep(0.05)
    return 3


@dg.job(executor_def=async_executor.configured({"termination_grace_seconds": 0.5}))
def sync_timeout_job():
    sync_over_budget()
    sync_stuck_over_budget()
    sync_in_budget()


@dg.op(config_schema={"path": str})
def write_and_spin_if_missing(context: dg.OpExecutionContext) -> None:
    """As Dagster's own interrupt test: the first attempt writes its pid and spins; the
    test interrupts it; the retry finds the file and returns."""
    target = context.op_config["path"]
    if os.path.exists(target):
        return
    with open(target, "w", encoding="utf8") as f:
        f.write(str(os.getpid()))
    started = time.time()
    while time.time() - started < 3:
        time.sleep(0.1)
    os.remove(target)
    raise dg.Failure("Timed out, file removed")


@dg.job(op_retry_policy=dg.RetryPolicy(max_retries=1), executor_def=async_executor)
def policy_job():
    write_and_spin_if_missing()


@dg.resource(config_schema={"cleaned": str})
def marks_teardown(init_context: dg.InitResourceContext):
    try:
        yield "A"
    finally:
        with open(init_context.resource_config["cleaned"], "w", encoding="utf8") as f:
            f.write("cleaned")


@dg.op(config_schema={"started": str}, required_resource_keys={"a"})
def spins_forever(context: dg.OpExecutionContext) -> None:
    with open(context.op_config["started"], "w", encoding="utf8") as f:
        f.write(str(os.getpid()))
    while True:
        time.sleep(0.1)


@dg.job(resource_defs={"a": marks_teardown}, executor_def=async_executor)
def teardown_job():
    spins_forever()


MIXED_ASYNC = 300
MIXED_SYNC = 20


@dg.op(out=dg.DynamicOut(int))
def fan_out():
    for i in range(MIXED_ASYNC):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def sleeps_long(item: int) -> int:
    await asyncio.sleep(60)
    return item


@dg.op(out=dg.DynamicOut(int))
def fan_out_sync():
    for i in range(MIXED_SYNC):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
def loops_long(item: int) -> int:
    for _ in range(600):
        time.sleep(0.1)
    return item


@dg.job(executor_def=async_executor.configured({"sync_threads": MIXED_SYNC}))
def mixed_job():
    fan_out().map(sleeps_long)
    fan_out_sync().map(loops_long)


KILL_WIDTH = 120


@dg.op(out=dg.DynamicOut(int))
def numbers():
    for i in range(KILL_WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def staggered(item: int) -> int:
    # Completions spread over ~3 s, so a kill lands while entries are being written.
    await asyncio.sleep(0.025 * item)
    return item * 2


@dg.op
async def total(values: list[int]) -> int:
    return sum(values)


@dg.job(executor_def=async_executor)
def kill_job():
    total(numbers().map(staggered).collect())


@dg.op(out=dg.DynamicOut(int))
def many():
    for i in range(150):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def short_sleep(item: int) -> int:
    await asyncio.sleep(0.01 * (item % 50))
    return item


@dg.op
async def count(values: list[int]) -> int:
    return len(values)


@dg.job(executor_def=async_executor)
def storage_fault_job():
    count(many().map(short_sleep).collect())


@dg.op(tags={STEP_TIMEOUT_TAG: "abc"})
async def badly_tagged() -> int:
    return 1


@dg.op
async def fine() -> int:
    return 2


@dg.job(executor_def=async_executor)
def bad_tag_job():
    fine()
    badly_tagged()


@dg.op(out=dg.DynamicOut(int))
def twenty_five():
    for i in range(25):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def sleeps_a_second(item: int) -> int:
    await asyncio.sleep(1.0)
    return item


@dg.op
def sync_sleeps_a_second(item: int) -> int:
    time.sleep(1.0)
    return item


@dg.job(executor_def=async_executor)
def wide_job():
    values = twenty_five()
    values.map(sleeps_a_second)
    values.map(sync_sleeps_a_second)


@dg.op
async def blocks_loop() -> int:
    time.sleep(0.3)  # deliberately blocking inside async def
    return 1


@dg.job(executor_def=async_executor.configured({"blocked_loop_warning_seconds": 0.1}))
def blocking_job():
    blocks_loop()


@dg.op(out=dg.DynamicOut(int))
def thirty():
    for i in range(30):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.job(executor_def=async_executor.configured({"event_log_writes": "direct"}))
def direct_job():
    count(thirty().map(short_sleep).collect())


defs = dg.Definitions(
    jobs=[sync_logger_job, stuck_job, mixed_job, kill_job, teardown_job, storage_fault_job]
)


@dg.op(out=dg.DynamicOut(int))
def six():
    for i in range(6):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
def logs_in_a_tight_loop(context: dg.OpExecutionContext, item: int) -> int:
    """Almost all of its time is inside `context.log`: the interrupt must wait for the
    few bytecodes of this loop itself, or it would leave a logging lock held."""
    STARTED.set()
    count = 0
    while True:
        context.log.debug(f"spin {item} {count}")
        count += 1


@dg.job(executor_def=async_executor.configured({"sync_threads": 6}))
def tight_logging_job():
    six().map(logs_in_a_tight_loop)
