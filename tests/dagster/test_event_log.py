"""The run's event log while dagloop runs it: entries written behind in batches (SQLite,
PostgreSQL, in memory), in the order they were logged, nothing lost; asset events
readable at once. Each test runs on the storages of `storage_instance` (tests/conftest.py).

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import asyncio
import threading
from pathlib import Path

import dagster as dg
import pytest

from dagloop.dagster import async_executor
from tests.dagster.conftest import assert_every_started_step_ended, run_job

ET = dg.DagsterEventType
WIDTH = 40


@dg.op(out=dg.DynamicOut(int))
def spread():
    for i in range(WIDTH):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def logs_twice(context: dg.OpExecutionContext, item: int) -> int:
    context.log.info(f"first {item}")
    await asyncio.sleep(0.01)
    context.log.info(f"second {item}")
    return item


@dg.op
def add_up(items: list[int]) -> int:
    return sum(items)


@dg.job(executor_def=async_executor)
def logging_job():
    add_up(spread().map(logs_twice).collect())


def _records(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogRecord]:
    return list(instance.get_records_for_run(run_id, limit=100_000).records)


def test_every_entry_is_written_once_and_in_logging_order(
    storage_instance: dg.DagsterInstance,
) -> None:
    instance = storage_instance
    outcome = run_job(logging_job, instance)
    assert outcome.success
    records = _records(instance, outcome.run_id)
    ids = [r.storage_id for r in records]
    assert ids == sorted(set(ids))
    # Each mapped step's entries are stored in the order the step logged them.
    for i in range(WIDTH):
        key = f"logs_twice[{i}]"
        mine = [r.event_log_entry for r in records if r.event_log_entry.step_key == key]
        kinds = [e.dagster_event_type or e.user_message.split()[0] for e in mine]
        assert kinds.index(ET.STEP_START) < kinds.index("first") < kinds.index("second")
        assert kinds.index("second") < kinds.index(ET.STEP_OUTPUT)
        assert kinds[-1] == ET.STEP_SUCCESS
        assert kinds.count(ET.STEP_SUCCESS) == 1
    # The run's own events frame the step entries: nothing was written after the end.
    types = [r.event_log_entry.dagster_event_type for r in records]
    assert types[-1] == ET.RUN_SUCCESS
    assert types.count(ET.STEP_SUCCESS) == WIDTH + 2
    # Written in batches: far fewer writes than entries.
    (summary,) = [
        e.message for e in outcome.of_type(ET.ENGINE_EVENT) if "event-log entries" in e.message
    ]
    entries, writes = (int(word) for word in summary.split() if word.isdigit())
    assert entries >= 5 * WIDTH and writes < entries / 2, summary
    # The instance is as it was: dagloop no longer takes its writes.
    assert "handle_new_event" not in vars(instance)
    assert_every_started_step_ended(instance, outcome.run_id)


@dg.asset
async def upstream_asset() -> int:
    await asyncio.sleep(0.01)
    return 1


@dg.asset
async def reads_upstream_record(context: dg.AssetExecutionContext, upstream_asset: int) -> int:
    # An asset event is written before the step that logged it goes on, so a
    # downstream step of the same run finds it in the event log.
    event = context.instance.get_latest_materialization_event(dg.AssetKey("upstream_asset"))
    found = event.run_id if event else None
    if found != context.run_id:
        raise AssertionError(f"upstream materialization not readable yet (found {found})")
    return upstream_asset + 1


asset_defs = dg.Definitions(
    assets=[upstream_asset, reads_upstream_record],
    jobs=[dg.define_asset_job("asset_reader_job")],
    resources={"io_manager": dg.FilesystemIOManager()},
    executor=async_executor,
)


def asset_reader_job() -> dg.JobDefinition:
    return asset_defs.resolve_job_def("asset_reader_job")


def test_asset_events_are_readable_by_downstream_steps_of_the_run(
    storage_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    config = {"resources": {"io_manager": {"config": {"base_dir": str(tmp_path / "io")}}}}
    outcome = run_job(asset_reader_job, storage_instance, config)
    assert outcome.success
    assert outcome.step_keys(ET.STEP_SUCCESS) == {"upstream_asset", "reads_upstream_record"}


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
def test_concurrent_runs_on_one_instance_keep_their_own_entries(
    storage_instance: dg.DagsterInstance,
) -> None:
    instance = storage_instance
    outcomes: list = []

    def one_run(on: dg.DagsterInstance) -> None:
        outcomes.append(run_job(logging_job, on))

    # Dagster itself deadlocks two runs starting in threads of one process: each
    # log manager it creates calls `logging.config.dictConfig`, against the other
    # run's handlers. Resolve the instance's python_logs handlers once, as dagloop's
    # Dask workers do.
    handlers = list(instance.get_yaml_python_handlers())
    instance.get_yaml_python_handlers = lambda: handlers  # type: ignore[method-assign]

    threads = [threading.Thread(target=one_run, args=(instance,)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(outcomes) == 2 and all(o.success for o in outcomes)
    for outcome in outcomes:
        records = _records(instance, outcome.run_id)
        assert {r.event_log_entry.run_id for r in records} == {outcome.run_id}
        successes = [r for r in records if r.event_log_entry.dagster_event_type == ET.STEP_SUCCESS]
        assert len(successes) == WIDTH + 2
    assert "handle_new_event" not in vars(instance)
