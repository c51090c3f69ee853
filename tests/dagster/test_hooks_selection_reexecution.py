"""Issue 2, item 8: success/failure hooks, op selection, re-execution from failure.

Hooks record what they saw into a file through a resource, so their side effects are
checked along with their HOOK_* events. Re-execution runs on a persistent SQLite
instance (the default IO manager there keeps the parent run's outputs on disk); a
flag file makes a step fail in the first run only.

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import asyncio
import re
import time
from pathlib import Path

import anyio
import dagster as dg
import pytest

from dagloop.dagster import async_executor
from tests.dagster.conftest import assert_every_started_step_ended, run_job

ET = dg.DagsterEventType


class Journal(dg.ConfigurableResource):
    """Appends one line per call to a file (the hooks' and ops' observable side effects)."""

    path: str

    def write(self, line: str) -> None:
        with open(self.path, "a") as f:
            f.write(line + "\n")

    def lines(self) -> list[str]:
        p = Path(self.path)
        return p.read_text().splitlines() if p.exists() else []


def _journal_config(path: Path) -> dict:
    return {"resources": {"journal": {"config": {"path": str(path)}}}}


# -- hooks --------------------------------------------------------------------------------


@dg.success_hook(required_resource_keys={"journal"})
def record_success(context: dg.HookContext) -> None:
    context.resources.journal.write(f"success {context.step_key} {context.op_output_values}")


@dg.failure_hook(required_resource_keys={"journal"})
def record_failure(context: dg.HookContext) -> None:
    exc = context.op_exception
    context.resources.journal.write(f"failure {context.step_key} {type(exc).__name__}: {exc}")


@dg.failure_hook(required_resource_keys={"journal"})
def page_someone(context: dg.HookContext) -> None:
    context.resources.journal.write(f"paged for {context.op.name}")


@dg.success_hook
def broken_hook(context: dg.HookContext) -> None:
    raise RuntimeError("the hook itself is broken")


@dg.op
async def fetch() -> int:
    await anyio.sleep(0.01)
    return 2


@dg.op
async def transform(x: int) -> int:
    await anyio.sleep(0.01)
    return x * 2


@dg.op
def sync_ok() -> str:
    return "fine"


@dg.op
async def explode() -> int:
    await anyio.sleep(0.01)
    raise ValueError("boom in an async op")


@dg.op
async def after_explode(x: int) -> int:
    raise AssertionError("must not run")


@dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
async def flaky_once(context: dg.OpExecutionContext) -> str:
    await anyio.sleep(0.01)
    if context.retry_number == 0:
        raise ConnectionError("first attempt fails")
    return f"ok on attempt {context.retry_number}"


@dg.job(
    executor_def=async_executor,
    hooks={record_success, record_failure},
    resource_defs={"journal": Journal.configure_at_launch()},
)
def hooks_job():
    transform(fetch())
    sync_ok.with_hooks({broken_hook})()
    after_explode(explode.with_hooks({page_someone})())
    flaky_once()


_HOOK_NAME = re.compile(r'hook "([^"]+)"')


def _hook_events(instance: dg.DagsterInstance, run_id: str) -> list[tuple[str, str, str]]:
    """(step_key, hook name, event type) of every hook event in the run's event log."""
    found = []
    for record in instance.all_logs(run_id):
        event = record.dagster_event
        if event is None or not event.event_type_value.startswith("HOOK_"):
            continue
        if event.event_type == ET.HOOK_ERRORED:
            # Dagster's HOOK_ERRORED message does not name the hook; the error says it all.
            name = "(errored)"
        else:
            match = _HOOK_NAME.search(event.message or "")
            assert match, event.message
            name = match.group(1)
        found.append((event.step_key, name, event.event_type_value))
    return sorted(found)


def test_success_and_failure_hooks_fire(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    outcome = run_job(hooks_job, instance, run_config=_journal_config(journal))

    assert not outcome.success  # `explode` fails the run
    assert outcome.ran_on_dagloop
    assert outcome.step_keys(ET.STEP_SUCCESS) == {"fetch", "transform", "sync_ok", "flaky_once"}
    assert outcome.step_keys(ET.STEP_FAILURE) == {"explode"}
    assert "after_explode" not in outcome.step_keys(ET.STEP_START)

    completed, skipped, errored = "HOOK_COMPLETED", "HOOK_SKIPPED", "HOOK_ERRORED"
    expected = [
        ("explode", "page_someone", completed),
        ("explode", "record_failure", completed),
        ("explode", "record_success", skipped),
        ("fetch", "record_failure", skipped),
        ("fetch", "record_success", completed),
        # flaky_once: attempt 0 is up for retry (neither hook triggers), attempt 1 succeeds.
        ("flaky_once", "record_failure", skipped),
        ("flaky_once", "record_failure", skipped),
        ("flaky_once", "record_success", completed),
        ("flaky_once", "record_success", skipped),
        ("sync_ok", "(errored)", errored),  # broken_hook
        ("sync_ok", "record_failure", skipped),
        ("sync_ok", "record_success", completed),
        ("transform", "record_failure", skipped),
        ("transform", "record_success", completed),
    ]
    assert _hook_events(instance, outcome.run_id) == sorted(expected)

    # The hooks' side effects: each fired exactly once per triggering step, and saw the
    # step's outputs or its exception.
    lines = sorted(Journal(path=str(journal)).lines())
    assert lines == sorted(
        [
            "success fetch {'result': 2}",
            "success transform {'result': 4}",
            "success sync_ok {'result': 'fine'}",
            "success flaky_once {'result': 'ok on attempt 1'}",
            "failure explode ValueError: boom in an async op",
            "paged for explode",
        ]
    )
    errored_records = [
        r
        for r in instance.all_logs(outcome.run_id)
        if r.dagster_event is not None and r.dagster_event.event_type == ET.HOOK_ERRORED
    ]
    assert len(errored_records) == 1
    error = errored_records[0].dagster_event.event_specific_data.error
    assert "the hook itself is broken" in error.to_string()
    assert_every_started_step_ended(instance, outcome.run_id)


@dg.op
async def succeed_quietly() -> int:
    await anyio.sleep(0.01)
    return 1


@dg.job(
    executor_def=async_executor,
    hooks={record_success, record_failure},
    resource_defs={"journal": Journal.configure_at_launch()},
)
def all_green_hooks_job():
    succeed_quietly()


def test_hooks_on_a_successful_run(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    outcome = run_job(all_green_hooks_job, instance, run_config=_journal_config(journal))
    assert outcome.success
    assert outcome.status == dg.DagsterRunStatus.SUCCESS
    assert sorted(e.event_type_value for e in outcome.events if e.is_hook_event) == [
        "HOOK_COMPLETED",
        "HOOK_SKIPPED",
    ]
    assert Journal(path=str(journal)).lines() == ["success succeed_quietly {'result': 1}"]


# -- op selection -------------------------------------------------------------------------


@dg.op(required_resource_keys={"journal"})
async def sel_a(context: dg.OpExecutionContext) -> int:
    context.resources.journal.write("sel_a")
    await anyio.sleep(0.01)
    return 1


@dg.op(required_resource_keys={"journal"})
async def sel_b(context: dg.OpExecutionContext, x: int) -> int:
    context.resources.journal.write("sel_b")
    await anyio.sleep(0.01)
    return x + 10


@dg.op(required_resource_keys={"journal"})
def sel_c(context: dg.OpExecutionContext, x: int) -> int:
    context.resources.journal.write("sel_c")
    return x * 100


@dg.op(required_resource_keys={"journal"})
async def sel_d(context: dg.OpExecutionContext) -> str:
    context.resources.journal.write("sel_d")
    return "d"


@dg.job(
    executor_def=async_executor,
    resource_defs={"journal": Journal.configure_at_launch()},
)
def selection_job():
    sel_c(sel_b(sel_a()))
    sel_d()


def test_op_selection_runs_only_selected_ops(instance: dg.DagsterInstance, tmp_path: Path) -> None:
    journal = tmp_path / "journal.txt"
    outcome = run_job(
        selection_job,
        instance,
        run_config=_journal_config(journal),
        outputs=("sel_b",),
        op_selection=["*sel_b"],
    )
    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.ran_on_dagloop
    assert outcome.outputs == {"sel_b": 11}
    assert outcome.step_keys(ET.STEP_START) == {"sel_a", "sel_b"}
    assert outcome.step_keys(ET.STEP_SUCCESS) == {"sel_a", "sel_b"}
    assert sorted(Journal(path=str(journal)).lines()) == ["sel_a", "sel_b"]
    run = instance.get_run_by_id(outcome.run_id)
    assert run is not None
    assert run.op_selection == ["*sel_b"]


def test_op_selection_with_unselected_upstream_input_from_config(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    journal = tmp_path / "journal.txt"
    run_config = {
        **_journal_config(journal),
        "ops": {"sel_c": {"inputs": {"x": 7}}},
    }
    outcome = run_job(
        selection_job,
        instance,
        run_config=run_config,
        outputs=("sel_c", "sel_d"),
        op_selection=["sel_c", "sel_d"],
    )
    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.ran_on_dagloop
    assert outcome.outputs == {"sel_c": 700, "sel_d": "d"}
    assert outcome.step_keys(ET.STEP_START) == {"sel_c", "sel_d"}
    assert sorted(Journal(path=str(journal)).lines()) == ["sel_c", "sel_d"]


# -- re-execution from failure --------------------------------------------------------------


class FailOnce(dg.ConfigurableResource):
    """`check(name)` raises the first time it is called for `name`, then passes.

    The first call leaves a flag file behind, so the failure happens in the first run
    only and the re-execution (a new run, same config) passes.
    """

    flag_dir: str

    def check(self, name: str) -> None:
        flag = Path(self.flag_dir) / f"{name}.failed-once"
        if not flag.exists():
            flag.touch()
            raise ConnectionError(f"{name}: transient failure (first run only)")


_REEXEC_RESOURCES = {
    "journal": Journal.configure_at_launch(),
    "fail_once": FailOnce.configure_at_launch(),
}


@dg.op(required_resource_keys={"journal"})
async def rx_root(context: dg.OpExecutionContext) -> int:
    context.resources.journal.write("rx_root")
    await anyio.sleep(0.01)
    return 10


@dg.op(required_resource_keys={"journal"})
def rx_side(context: dg.OpExecutionContext, x: int) -> int:
    context.resources.journal.write("rx_side")
    return -x


@dg.op(required_resource_keys={"journal", "fail_once"})
async def rx_flaky(context: dg.OpExecutionContext, x: int) -> int:
    context.resources.journal.write("rx_flaky")
    await anyio.sleep(0.01)
    context.resources.fail_once.check("rx_flaky")
    return x + 1


@dg.op(required_resource_keys={"journal"})
async def rx_downstream(context: dg.OpExecutionContext, x: int) -> int:
    context.resources.journal.write("rx_downstream")
    await anyio.sleep(0.01)
    return x * 2


@dg.job(executor_def=async_executor, resource_defs=_REEXEC_RESOURCES)
def reexecution_job():
    x = rx_root()
    rx_side(x)
    rx_downstream(rx_flaky(x))


def _reexec_config(tmp_path: Path) -> dict:
    flags = tmp_path / "flags"
    flags.mkdir(exist_ok=True)
    return {
        "resources": {
            "journal": {"config": {"path": str(tmp_path / "journal.txt")}},
            "fail_once": {"config": {"flag_dir": str(flags)}},
        }
    }


def test_reexecution_from_failure_runs_only_failed_and_downstream(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    instance = sqlite_instance
    journal = Journal(path=str(tmp_path / "journal.txt"))

    first = run_job(reexecution_job, instance, run_config=_reexec_config(tmp_path))
    assert not first.success
    assert first.status == dg.DagsterRunStatus.FAILURE
    assert first.step_keys(ET.STEP_SUCCESS) == {"rx_root", "rx_side"}
    assert first.step_keys(ET.STEP_FAILURE) == {"rx_flaky"}
    assert "rx_downstream" not in first.step_keys(ET.STEP_START)
    assert sorted(journal.lines()) == ["rx_flaky", "rx_root", "rx_side"]

    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    # No run_config: the re-execution inherits the parent run's.
    second = run_job(
        reexecution_job, instance, outputs=("rx_downstream",), reexecution_options=options
    )
    assert second.success, second.of_type(ET.STEP_FAILURE)
    assert second.status == dg.DagsterRunStatus.SUCCESS
    assert second.ran_on_dagloop
    assert second.outputs == {"rx_downstream": 22}  # (10 + 1) * 2, rx_root's 10 loaded
    assert second.step_keys(ET.STEP_START) == {"rx_flaky", "rx_downstream"}
    assert second.step_keys(ET.STEP_SUCCESS) == {"rx_flaky", "rx_downstream"}
    # rx_root and rx_side were not run again: their only journal lines are the first run's.
    assert sorted(journal.lines()) == [
        "rx_downstream",
        "rx_flaky",
        "rx_flaky",
        "rx_root",
        "rx_side",
    ]
    # rx_flaky's input came from the parent run's stored output.
    loaded = [e for e in second.of_type(ET.LOADED_INPUT) if e.step_key == "rx_flaky"]
    assert len(loaded) == 1
    assert loaded[0].event_specific_data.upstream_step_key == "rx_root"

    run = instance.get_run_by_id(second.run_id)
    assert run is not None
    assert run.parent_run_id == first.run_id
    assert run.root_run_id == first.run_id
    assert set(run.step_keys_to_execute or ()) == {"rx_flaky", "rx_downstream"}
    assert_every_started_step_ended(instance, first.run_id)
    assert_every_started_step_ended(instance, second.run_id)


# -- re-execution from failure inside a dynamic fan-out ------------------------------------


@dg.op(out=dg.DynamicOut(int), required_resource_keys={"journal"})
async def rx_fan(context: dg.OpExecutionContext):
    context.resources.journal.write("rx_fan")
    for i in range(4):
        yield dg.DynamicOutput(i, mapping_key=f"k{i}")


@dg.op(required_resource_keys={"journal", "fail_once"})
async def rx_item(context: dg.OpExecutionContext, i: int) -> int:
    key = context.get_mapping_key()
    context.resources.journal.write(f"rx_item[{key}]")
    await anyio.sleep(0.01)
    if key == "k2":
        context.resources.fail_once.check(f"rx_item_{key}")
    return i * i


@dg.op(required_resource_keys={"journal"})
async def rx_sum(context: dg.OpExecutionContext, values: list[int]) -> int:
    context.resources.journal.write("rx_sum")
    return sum(values)


@dg.job(executor_def=async_executor, resource_defs=_REEXEC_RESOURCES)
def dynamic_reexecution_job():
    rx_sum(rx_fan().map(rx_item).collect())


def test_reexecution_from_failure_of_one_mapped_step(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    instance = sqlite_instance
    journal = Journal(path=str(tmp_path / "journal.txt"))

    first = run_job(dynamic_reexecution_job, instance, run_config=_reexec_config(tmp_path))
    assert not first.success
    assert first.step_keys(ET.STEP_FAILURE) == {"rx_item[k2]"}
    assert first.step_keys(ET.STEP_SUCCESS) == {
        "rx_fan",
        "rx_item[k0]",
        "rx_item[k1]",
        "rx_item[k3]",
    }

    options = dg.ReexecutionOptions.from_failure(first.run_id, instance)
    second = run_job(
        dynamic_reexecution_job, instance, outputs=("rx_sum",), reexecution_options=options
    )
    assert second.success, second.of_type(ET.STEP_FAILURE)
    assert second.ran_on_dagloop
    assert second.outputs == {"rx_sum": 0 + 1 + 4 + 9}
    # Only the failed mapped copy and the collector ran again.
    assert second.step_keys(ET.STEP_START) == {"rx_item[k2]", "rx_sum"}
    assert sorted(journal.lines()) == sorted(
        [
            "rx_fan",
            "rx_item[k0]",
            "rx_item[k1]",
            "rx_item[k2]",
            "rx_item[k3]",
            "rx_item[k2]",
            "rx_sum",
        ]
    )
    assert_every_started_step_ended(instance, second.run_id)


# -- a blocking hook must not block the event loop -----------------------------------------

HOOK_BLOCK_SECONDS = 1.5


@dg.success_hook
def blocking_notify(context: dg.HookContext) -> None:
    """Like a real notification hook (`requests.post(...)`): synchronous and blocking."""
    try:
        asyncio.get_running_loop()
        where = "on the event loop thread"
    except RuntimeError:
        where = "off the event loop"
    context.log.info(f"blocking_notify for {context.step_key}: {where}")
    time.sleep(HOOK_BLOCK_SECONDS)


@dg.op
async def quick_async() -> int:
    await anyio.sleep(0.3)
    return 1


@dg.op
def quick_sync() -> int:
    return 2


@dg.op
async def ticker(context: dg.OpExecutionContext) -> float:
    """Ticks every 0.1 s while the hooks run; returns the longest gap between ticks."""
    gaps = []
    last = time.monotonic()
    for _ in range(25):
        await anyio.sleep(0.1)
        now = time.monotonic()
        gaps.append(now - last)
        last = now
    return max(gaps)


@dg.job(executor_def=async_executor)
def blocking_hook_job():
    quick_async.with_hooks({blocking_notify})()
    quick_sync.with_hooks({blocking_notify})()
    ticker()


@pytest.mark.parametrize(
    "step_host",
    ["greenlet", "thread"],
)
def test_blocking_hook_does_not_block_the_event_loop(
    ephemeral_instance: dg.DagsterInstance, step_host: str
) -> None:
    outcome = run_job(
        blocking_hook_job,
        ephemeral_instance,
        run_config={"execution": {"config": {"step_host": step_host}}},
        outputs=("ticker",),
    )
    assert outcome.success
    assert [e.step_key for e in outcome.of_type(ET.HOOK_COMPLETED)].count("quick_async") == 1
    messages = {
        r.user_message
        for r in ephemeral_instance.all_logs(outcome.run_id)
        if r.dagster_event is None and r.user_message.startswith("blocking_notify")
    }
    # Hooks are synchronous user code: like sync ops, they belong off the loop.
    assert messages == {
        "blocking_notify for quick_sync: off the event loop",
        "blocking_notify for quick_async: off the event loop",
    }
    # And the loop kept ticking while they blocked (a blocked loop shows a gap of at
    # least HOOK_BLOCK_SECONDS; the bound leaves room for a noisy machine).
    assert outcome.outputs["ticker"] < HOOK_BLOCK_SECONDS * 0.8
