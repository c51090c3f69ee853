"""Issue 2, item 3: async generators, `context.log`, nested graphs, optional outputs.

Every job runs through `dg.execute_job(dg.reconstructable(job), ...)` so the job's own
executor (dagloop's) runs it, on an ephemeral and on a persistent SQLite instance.

No `from __future__ import annotations` here: Dagster inspects the `context` annotation
of ops at definition time and rejects a string annotation.
"""

import asyncio

import anyio
import dagster as dg
import pytest

from dagloop.dagster import async_executor
from tests.dagster.conftest import assert_every_started_step_ended, run_job

ET = dg.DagsterEventType


#: Where the executor hosts async steps' Dagster bookkeeping; both must behave the same.
STEP_HOSTS = pytest.mark.parametrize("step_host", ["greenlet", "thread"])


def _host_config(step_host: str) -> dict:
    return {"execution": {"config": {"step_host": step_host}}}


def _messages(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str | None, str]]:
    """(step_key, message) of every user log message (`context.log`) in the run's event log."""
    return [
        (record.step_key, record.user_message)
        for record in instance.all_logs(run_id)
        if record.dagster_event is None
    ]


# -- async generators yielding Output / DynamicOutput / AssetMaterialization -------------


@dg.op(out={"left": dg.Out(int), "right": dg.Out(str)})
async def two_outputs(context: dg.OpExecutionContext):
    context.log.info("two_outputs: before first yield")
    await anyio.sleep(0.01)
    yield dg.AssetMaterialization(
        asset_key="gen_report", description="made by an async generator", metadata={"rows": 3}
    )
    yield dg.Output(41, output_name="left", metadata={"side": "left"})
    await anyio.sleep(0.01)
    yield dg.Output("r", output_name="right")
    context.log.warning("two_outputs: after last yield")


@dg.op(out=dg.DynamicOut(int))
async def fan_out_gen(context: dg.OpExecutionContext, base: int):
    for i in range(4):
        await anyio.sleep(0.005)
        context.log.info(f"fan_out_gen: emitting {i}")
        yield dg.DynamicOutput(base + i, mapping_key=f"m{i}")


@dg.op
async def double(context: dg.OpExecutionContext, value: int) -> int:
    await anyio.sleep(0.01)
    context.log.info(f"double: {value} -> {value * 2}")
    return value * 2


@dg.op
async def join(left: list[int], right: str) -> str:
    return f"{right}:{sorted(left)}"


@dg.job(executor_def=async_executor)
def generator_job():
    left, right = two_outputs()
    join(fan_out_gen(left).map(double).collect(), right)


@STEP_HOSTS
def test_async_generators_yield_outputs_dynamic_outputs_and_materializations(
    instance: dg.DagsterInstance, step_host: str
) -> None:
    outcome = run_job(
        generator_job, instance, run_config=_host_config(step_host), outputs=("join",)
    )

    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.status == dg.DagsterRunStatus.SUCCESS
    assert outcome.ran_on_dagloop
    # 41..44 doubled, collected in mapping-key order then sorted by `join`.
    assert outcome.outputs["join"] == "r:[82, 84, 86, 88]"

    mapped = {f"double[m{i}]" for i in range(4)}
    assert outcome.step_keys(ET.STEP_SUCCESS) == {
        "two_outputs",
        "fan_out_gen",
        "join",
        *mapped,
    }

    outputs = {
        (e.step_key, e.step_output_data.output_name, e.step_output_data.mapping_key)
        for e in outcome.of_type(ET.STEP_OUTPUT)
    }
    assert ("two_outputs", "left", None) in outputs
    assert ("two_outputs", "right", None) in outputs
    assert {(k, n, m) for k, n, m in outputs if k == "fan_out_gen"} == {
        ("fan_out_gen", "result", f"m{i}") for i in range(4)
    }
    left_event = next(
        e
        for e in outcome.of_type(ET.STEP_OUTPUT)
        if e.step_key == "two_outputs" and e.step_output_data.output_name == "left"
    )
    assert left_event.step_output_data.metadata["side"] == dg.TextMetadataValue("left")

    # The AssetMaterialization yielded mid-generator reached the event log and the instance.
    materializations = outcome.of_type(ET.ASSET_MATERIALIZATION)
    assert [e.step_key for e in materializations] == ["two_outputs"]
    mat = materializations[0].step_materialization_data.materialization
    assert mat.asset_key == dg.AssetKey("gen_report")
    assert mat.metadata["rows"] == dg.IntMetadataValue(3)
    latest = instance.get_latest_materialization_event(dg.AssetKey("gen_report"))
    assert latest is not None and latest.run_id == outcome.run_id

    # `context.log` from async ops (before, between and after yields) is in the event log,
    # attributed to the step that logged it.
    messages = _messages(instance, outcome.run_id)
    assert ("two_outputs", "two_outputs: before first yield") in messages
    assert ("two_outputs", "two_outputs: after last yield") in messages
    for i in range(4):
        assert ("fan_out_gen", f"fan_out_gen: emitting {i}") in messages
        assert (f"double[m{i}]", f"double: {41 + i} -> {(41 + i) * 2}") in messages
    assert_every_started_step_ended(instance, outcome.run_id)


# -- context.log levels and structured records -------------------------------------------


@dg.op
async def chatty(context: dg.OpExecutionContext) -> int:
    for i in range(5):
        context.log.debug(f"chatty debug {i}")
        await anyio.sleep(0.002)
        context.log.info(f"chatty info {i}")
    context.log.error("chatty error line")
    return 5


@dg.op
async def also_chatty(context: dg.OpExecutionContext, n: int) -> int:
    context.log.info(f"also_chatty got {n}")
    return n + 1


@dg.job(executor_def=async_executor)
def logging_job():
    also_chatty(chatty())


def test_context_log_from_async_ops_lands_in_event_log(instance: dg.DagsterInstance) -> None:
    outcome = run_job(logging_job, instance, outputs=("also_chatty",))
    assert outcome.success
    assert outcome.outputs["also_chatty"] == 6

    records = [r for r in instance.all_logs(outcome.run_id) if r.dagster_event is None]
    by_message = {r.user_message: r for r in records}
    for i in range(5):
        assert by_message[f"chatty debug {i}"].level == 10  # logging.DEBUG
        assert by_message[f"chatty info {i}"].level == 20  # logging.INFO
        assert by_message[f"chatty info {i}"].step_key == "chatty"
    assert by_message["chatty error line"].level == 40  # logging.ERROR
    assert by_message["also_chatty got 5"].step_key == "also_chatty"
    # In order within a step: messages are emitted as the op logs them.
    chatty_infos = [r.user_message for r in records if r.user_message.startswith("chatty info")]
    assert chatty_infos == [f"chatty info {i}" for i in range(5)]


# -- nested graphs ------------------------------------------------------------------------


@dg.op
async def seed() -> int:
    await anyio.sleep(0.01)
    return 3


@dg.op
async def add_one(context: dg.OpExecutionContext, x: int) -> int:
    await anyio.sleep(0.01)
    context.log.info(f"add_one({x})")
    return x + 1


@dg.op
def sync_square(x: int) -> int:
    return x * x


@dg.op
async def total(a: int, b: int) -> int:
    return a + b


@dg.graph
def inner(x: int) -> int:
    return sync_square(add_one(x))


@dg.graph(out={"a": dg.GraphOut(), "b": dg.GraphOut()})
def middle(x: int):
    return {"a": inner(x), "b": add_one(inner(add_one(x)))}


@dg.job(executor_def=async_executor)
def nested_job():
    a, b = middle(seed())
    total(a, b)


def test_nested_graphs_with_async_ops(instance: dg.DagsterInstance) -> None:
    outcome = run_job(nested_job, instance, outputs=("total", "middle.inner.sync_square"))
    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    # a = (3 + 1)^2 = 16; b = ((3 + 1) + 1)^2 + 1 = 26
    assert outcome.outputs["total"] == 42
    assert outcome.outputs["middle.inner.sync_square"] == 16
    assert outcome.step_keys(ET.STEP_SUCCESS) == {
        "seed",
        "middle.inner.add_one",
        "middle.inner.sync_square",
        "middle.add_one",
        "middle.inner_2.add_one",
        "middle.inner_2.sync_square",
        "middle.add_one_2",
        "total",
    }
    messages = _messages(instance, outcome.run_id)
    assert ("middle.inner.add_one", "add_one(3)") in messages
    assert ("middle.inner_2.add_one", "add_one(4)") in messages
    assert ("middle.add_one_2", "add_one(25)") in messages


# -- optional outputs that skip downstream -------------------------------------------------


@dg.op(
    out={
        "taken": dg.Out(int, is_required=False),
        "not_taken": dg.Out(int, is_required=False),
    }
)
async def branch(context: dg.OpExecutionContext):
    await anyio.sleep(0.01)
    context.log.info("branch: only 'taken' is produced")
    yield dg.Output(7, output_name="taken")


@dg.op
async def on_taken(x: int) -> int:
    await anyio.sleep(0.01)
    return x * 10


@dg.op
async def on_not_taken(x: int) -> int:
    raise AssertionError("must never run: its input was never produced")


@dg.op
def after_not_taken_sync(x: int) -> int:
    raise AssertionError("must never run: its upstream was skipped")


@dg.op
async def after_taken(x: int) -> int:
    return x + 1


@dg.op(ins={"maybe": dg.In(dg.Nothing)})
async def independent() -> str:
    await anyio.sleep(0.01)
    return "ran"


@dg.op(out=dg.Out(int, is_required=False))
async def async_maybe_return(context: dg.OpExecutionContext):
    # An async generator that yields nothing at all: its only output is skipped.
    if False:
        yield dg.Output(1)
    context.log.info("async_maybe_return: produced nothing")


@dg.op
async def after_maybe(x: int) -> int:
    raise AssertionError("must never run")


@dg.job(executor_def=async_executor)
def optional_job():
    taken, not_taken = branch()
    after_taken(on_taken(taken))
    after_not_taken_sync(on_not_taken(not_taken))
    after_maybe(async_maybe_return())
    independent()


@STEP_HOSTS
def test_optional_outputs_skip_downstream(instance: dg.DagsterInstance, step_host: str) -> None:
    outcome = run_job(
        optional_job,
        instance,
        run_config=_host_config(step_host),
        outputs=("after_taken", "independent"),
    )

    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.outputs == {"after_taken": 71, "independent": "ran"}
    assert outcome.ran_on_dagloop
    assert outcome.step_keys(ET.STEP_SUCCESS) == {
        "branch",
        "on_taken",
        "after_taken",
        "async_maybe_return",
        "independent",
    }
    # Exactly the steps downstream of the missing outputs are skipped, transitively.
    assert outcome.step_keys(ET.STEP_SKIPPED) == {
        "on_not_taken",
        "after_not_taken_sync",
        "after_maybe",
    }
    assert not outcome.of_type(ET.STEP_FAILURE)
    # Skipped steps never started.
    assert outcome.step_keys(ET.STEP_START).isdisjoint(outcome.step_keys(ET.STEP_SKIPPED))
    produced = {
        (e.step_key, e.step_output_data.output_name) for e in outcome.of_type(ET.STEP_OUTPUT)
    }
    assert ("branch", "taken") in produced
    assert ("branch", "not_taken") not in produced
    assert not any(k == "async_maybe_return" for k, _ in produced)
    assert_every_started_step_ended(instance, outcome.run_id)


# -- a dynamic fan-out whose mapped ops are themselves async generators ---------------------


@dg.op(out=dg.DynamicOut(str))
async def letters():
    for letter in "abc":
        yield dg.DynamicOutput(letter, mapping_key=letter)


@dg.op(out={"upper": dg.Out(str), "maybe_skip": dg.Out(str, is_required=False)})
async def per_letter(context: dg.OpExecutionContext, letter: str):
    await anyio.sleep(0.01)
    yield dg.AssetMaterialization(asset_key=["letters", letter])
    yield dg.Output(letter.upper(), output_name="upper")
    if letter != "b":
        yield dg.Output(letter * 2, output_name="maybe_skip")


@dg.op
async def use_maybe(value: str) -> str:
    return value


@dg.op
async def gather_upper(values: list[str]) -> str:
    return "".join(values)


@dg.job(executor_def=async_executor)
def dynamic_generator_job():
    upper, maybe = letters().map(per_letter)
    gather_upper(upper.collect())
    maybe.map(use_maybe)


def test_mapped_async_generators_with_optional_outputs(instance: dg.DagsterInstance) -> None:
    outcome = run_job(dynamic_generator_job, instance, outputs=("gather_upper",))
    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.outputs["gather_upper"] == "ABC"
    # Only the mapped copy whose optional output was not produced is skipped.
    assert outcome.step_keys(ET.STEP_SKIPPED) == {"use_maybe[b]"}
    assert {"use_maybe[a]", "use_maybe[c]"} <= outcome.step_keys(ET.STEP_SUCCESS)
    assert {
        tuple(e.step_materialization_data.materialization.asset_key.path)
        for e in outcome.of_type(ET.ASSET_MATERIALIZATION)
    } == {("letters", "a"), ("letters", "b"), ("letters", "c")}
    assert_every_started_step_ended(instance, outcome.run_id)


# -- structured concurrency and timeouts inside an async generator op ----------------------


@dg.op(out=dg.DynamicOut(int))
async def gen_with_task_groups(context: dg.OpExecutionContext):
    results: list[int] = []

    async def child(i: int) -> None:
        await anyio.sleep(0.01)
        context.log.info(f"child {i} done")  # context.log from a child task
        results.append(i)

    async with anyio.create_task_group() as tg:
        for i in range(3):
            tg.start_soon(child, i)
    async with asyncio.TaskGroup() as tg2:
        for i in range(3, 5):
            tg2.create_task(child(i))
    try:
        async with asyncio.timeout(0.05):
            await asyncio.sleep(30)
    except TimeoutError:
        context.log.info("asyncio.timeout fired")
    with anyio.move_on_after(0.05) as scope:
        await anyio.sleep(30)
    if scope.cancelled_caught:
        context.log.info("anyio.move_on_after fired")
    for r in sorted(results):
        await asyncio.sleep(0)
        yield dg.DynamicOutput(r, mapping_key=f"c{r}")


@dg.op
async def triple_in_executor(x: int) -> int:
    assert asyncio.current_task() is not None
    loop = asyncio.get_running_loop()
    return await asyncio.wait_for(loop.run_in_executor(None, lambda: x * 3), timeout=30)


@dg.op
async def sum_all(values: list[int]) -> int:
    return sum(values)


@dg.job(executor_def=async_executor)
def task_group_job():
    sum_all(gen_with_task_groups().map(triple_in_executor).collect())


@STEP_HOSTS
def test_task_groups_and_timeouts_inside_async_generator_op(
    ephemeral_instance: dg.DagsterInstance, step_host: str
) -> None:
    outcome = run_job(
        task_group_job,
        ephemeral_instance,
        run_config=_host_config(step_host),
        outputs=("sum_all",),
    )
    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.ran_on_dagloop
    assert outcome.outputs["sum_all"] == 3 * (0 + 1 + 2 + 3 + 4)
    messages = {m for k, m in _messages(ephemeral_instance, outcome.run_id)}
    assert {f"child {i} done" for i in range(5)} <= messages
    assert {"asyncio.timeout fired", "anyio.move_on_after fired"} <= messages
