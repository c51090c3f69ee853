"""Issue 2, item 6: async assets, multi-assets and asset checks through `define_asset_job`.

The jobs come from `dg.Definitions(..., executor=async_executor)`; each is reconstructed
from a module-level function that resolves it, so `dg.execute_job` runs it with the
Definitions' executor (dagloop's). Values move between async assets through
`FilesystemIOManager` (the Pythonic `fs_io_manager`) pickles in a per-test directory,
and later runs read them back.

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import pickle
from pathlib import Path

import anyio
import dagster as dg

from dagloop.dagster import async_executor
from tests.dagster.conftest import RunOutcome, assert_every_started_step_ended, run_job

ET = dg.DagsterEventType

# -- a pipeline: async asset -> async multi_asset -> async + sync consumers ----------------


@dg.asset
async def raw_numbers(context: dg.AssetExecutionContext) -> list[int]:
    await anyio.sleep(0.01)
    context.log.info("raw_numbers: fetched")
    return [5, 3, 8, 1]


@dg.multi_asset(
    outs={
        "sorted_numbers": dg.AssetOut(),
        "number_stats": dg.AssetOut(),
    },
    can_subset=False,
)
async def split_numbers(raw_numbers: list[int]):
    await anyio.sleep(0.01)
    yield dg.Output(sorted(raw_numbers), output_name="sorted_numbers")
    await anyio.sleep(0.01)
    yield dg.Output(
        {"min": min(raw_numbers), "max": max(raw_numbers), "n": len(raw_numbers)},
        output_name="number_stats",
        metadata={"n": len(raw_numbers)},
    )


@dg.asset
async def number_report(sorted_numbers: list[int], number_stats: dict) -> str:
    await anyio.sleep(0.01)
    return (
        f"{sorted_numbers} n={number_stats['n']} span={number_stats['max'] - number_stats['min']}"
    )


@dg.asset
def sync_total(raw_numbers: list[int]) -> int:
    # A synchronous asset in the same job (runs in a worker thread).
    return sum(raw_numbers)


@dg.asset_check(asset=raw_numbers, description="no negative numbers")
async def raw_numbers_non_negative(raw_numbers: list[int]) -> dg.AssetCheckResult:
    await anyio.sleep(0.01)
    return dg.AssetCheckResult(passed=all(n >= 0 for n in raw_numbers))


# -- a guarded chain: a blocking check fails and stops what depends on its asset ------------


@dg.asset
async def guarded_source() -> list[int]:
    await anyio.sleep(0.01)
    return [1, -2, 3]


@dg.asset_check(asset=guarded_source, blocking=True, description="no negatives (blocking)")
async def guarded_source_non_negative(guarded_source: list[int]) -> dg.AssetCheckResult:
    await anyio.sleep(0.01)
    negatives = [n for n in guarded_source if n < 0]
    return dg.AssetCheckResult(passed=not negatives, metadata={"negatives": len(negatives)})


@dg.asset
async def guarded_consumer(guarded_source: list[int]) -> int:
    raise AssertionError("must not run: the blocking check on its upstream failed")


@dg.asset
async def guarded_consumer_2(guarded_consumer: int) -> int:
    raise AssertionError("must not run")


@dg.asset
async def unguarded_sibling() -> str:
    await anyio.sleep(0.01)
    return "independent of the failed check"


# -- a blocking check declared on the asset itself (same step) ------------------------------


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="inline_checked", blocking=True)])
async def inline_checked():
    await anyio.sleep(0.01)
    yield dg.Output(-1)
    yield dg.AssetCheckResult(check_name="positive", passed=False)


@dg.asset
async def after_inline_checked(inline_checked: int) -> int:
    raise AssertionError("must not run")


defs = dg.Definitions(
    assets=[
        raw_numbers,
        split_numbers,
        number_report,
        sync_total,
        guarded_source,
        guarded_consumer,
        guarded_consumer_2,
        unguarded_sibling,
        inline_checked,
        after_inline_checked,
    ],
    asset_checks=[raw_numbers_non_negative, guarded_source_non_negative],
    jobs=[
        dg.define_asset_job(
            "pipeline_job",
            selection=dg.AssetSelection.assets(
                raw_numbers, split_numbers, number_report, sync_total
            ),
        ),
        dg.define_asset_job(
            "guarded_job",
            selection=dg.AssetSelection.assets(
                guarded_source, guarded_consumer, guarded_consumer_2, unguarded_sibling
            ),
        ),
        dg.define_asset_job(
            "inline_check_job",
            selection=dg.AssetSelection.assets(inline_checked, after_inline_checked),
        ),
    ],
    resources={"io_manager": dg.FilesystemIOManager()},
    executor=async_executor,
)


def pipeline_job() -> dg.JobDefinition:
    return defs.resolve_job_def("pipeline_job")


def guarded_job() -> dg.JobDefinition:
    return defs.resolve_job_def("guarded_job")


def inline_check_job() -> dg.JobDefinition:
    return defs.resolve_job_def("inline_check_job")


def _io_config(base_dir: Path) -> dict:
    return {"resources": {"io_manager": {"config": {"base_dir": str(base_dir)}}}}


def _materialized(outcome: RunOutcome) -> set[str]:
    return {
        e.step_materialization_data.materialization.asset_key.to_user_string()
        for e in outcome.of_type(ET.ASSET_MATERIALIZATION)
    }


def _not_executed(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    """Steps Dagster declined to run because an upstream step failed or did not run."""
    return {
        record.step_key
        for record in instance.all_logs(run_id)
        if record.step_key is not None
        and record.user_message.startswith(f"Dependencies for step {record.step_key} ")
        and record.user_message.endswith("Not executing.")
    }


def _stored(base_dir: Path, key: str):
    return pickle.loads((base_dir / key).read_bytes())


def test_definitions_executor_is_dagloop() -> None:
    # The job resolved from Definitions carries our executor, not the default one.
    assert pipeline_job().executor_def is async_executor
    assert guarded_job().executor_def is async_executor


def test_async_assets_multi_asset_and_fs_io_round_trips(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    base_dir = tmp_path / "storage"
    outcome = run_job(pipeline_job, instance, run_config=_io_config(base_dir))

    assert outcome.success, outcome.of_type(ET.STEP_FAILURE)
    assert outcome.ran_on_dagloop
    assert _materialized(outcome) == {
        "raw_numbers",
        "sorted_numbers",
        "number_stats",
        "number_report",
        "sync_total",
    }
    # The non-blocking check on raw_numbers ran in the same job and passed.
    evaluations = [e.event_specific_data for e in outcome.of_type(ET.ASSET_CHECK_EVALUATION)]
    assert [(ev.check_name, ev.passed) for ev in evaluations] == [
        ("raw_numbers_non_negative", True)
    ]

    # Values written by each async asset were read back correctly by its consumers: the
    # final pickles on disk hold what the chain computes from raw_numbers.
    assert _stored(base_dir, "raw_numbers") == [5, 3, 8, 1]
    assert _stored(base_dir, "sorted_numbers") == [1, 3, 5, 8]
    assert _stored(base_dir, "number_stats") == {"min": 1, "max": 8, "n": 4}
    assert _stored(base_dir, "number_report") == "[1, 3, 5, 8] n=4 span=7"
    assert _stored(base_dir, "sync_total") == 17

    # Every materialization is recorded in the instance against this run.
    for key in ("raw_numbers", "sorted_numbers", "number_stats", "number_report", "sync_total"):
        latest = instance.get_latest_materialization_event(dg.AssetKey(key))
        assert latest is not None, key
        assert latest.run_id == outcome.run_id
    stats_event = instance.get_latest_materialization_event(dg.AssetKey("number_stats"))
    assert stats_event is not None and stats_event.asset_materialization is not None
    assert stats_event.asset_materialization.metadata["n"] == dg.IntMetadataValue(4)
    assert_every_started_step_ended(instance, outcome.run_id)


def test_asset_subset_run_loads_upstream_from_previous_run(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    base_dir = tmp_path / "storage"
    first = run_job(pipeline_job, instance, run_config=_io_config(base_dir))
    assert first.success

    # Overwrite the stored multi-asset outputs so the next run can only get these values
    # by loading them through fs_io_manager (not by recomputing them).
    (base_dir / "sorted_numbers").write_bytes(pickle.dumps([10, 20]))
    (base_dir / "number_stats").write_bytes(pickle.dumps({"min": 10, "max": 20, "n": 2}))

    second = run_job(
        pipeline_job,
        instance,
        run_config=_io_config(base_dir),
        asset_selection=[dg.AssetKey("number_report")],
    )
    assert second.success, second.of_type(ET.STEP_FAILURE)
    assert second.ran_on_dagloop
    assert second.step_keys(ET.STEP_SUCCESS) == {"number_report"}
    assert _materialized(second) == {"number_report"}
    assert _stored(base_dir, "number_report") == "[10, 20] n=2 span=10"
    # raw_numbers was not re-materialized: its latest materialization is the first run's.
    latest_raw = instance.get_latest_materialization_event(dg.AssetKey("raw_numbers"))
    assert latest_raw is not None and latest_raw.run_id == first.run_id
    latest_report = instance.get_latest_materialization_event(dg.AssetKey("number_report"))
    assert latest_report is not None and latest_report.run_id == second.run_id


def test_failed_blocking_check_blocks_downstream_assets(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    base_dir = tmp_path / "storage"
    outcome = run_job(guarded_job, instance, run_config=_io_config(base_dir))

    assert not outcome.success
    assert outcome.status == dg.DagsterRunStatus.FAILURE
    assert outcome.ran_on_dagloop

    evaluations = {
        e.event_specific_data.check_name: e.event_specific_data
        for e in outcome.of_type(ET.ASSET_CHECK_EVALUATION)
    }
    assert set(evaluations) == {"guarded_source_non_negative"}
    assert evaluations["guarded_source_non_negative"].passed is False

    # The asset itself and the independent sibling materialized; nothing downstream of
    # the failed blocking check did, and the downstream steps never started.
    assert _materialized(outcome) == {"guarded_source", "unguarded_sibling"}
    assert _stored(base_dir, "unguarded_sibling") == "independent of the failed check"
    started = outcome.step_keys(ET.STEP_START)
    assert "guarded_consumer" not in started
    assert "guarded_consumer_2" not in started
    # As with Dagster's in-process executor, steps downstream of a failure are not
    # STEP_SKIPPED (that is for missing optional outputs): ActiveExecution abandons them
    # and logs why, transitively.
    not_executed = _not_executed(instance, outcome.run_id)
    assert not_executed == {"guarded_consumer", "guarded_consumer_2"}
    assert not (base_dir / "guarded_consumer").exists()
    assert instance.get_latest_materialization_event(dg.AssetKey("guarded_consumer")) is None
    # The check's step failed (that is what blocks), and nothing else failed.
    assert outcome.step_keys(ET.STEP_FAILURE) == {"guarded_source_guarded_source_non_negative"}
    assert_every_started_step_ended(instance, outcome.run_id)


def test_failed_inline_blocking_check_fails_step_and_skips_downstream(
    instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    outcome = run_job(inline_check_job, instance, run_config=_io_config(tmp_path / "storage"))

    assert not outcome.success
    assert outcome.ran_on_dagloop
    evaluations = [e.event_specific_data for e in outcome.of_type(ET.ASSET_CHECK_EVALUATION)]
    assert [(ev.check_name, ev.passed) for ev in evaluations] == [("positive", False)]
    assert outcome.step_keys(ET.STEP_FAILURE) == {"inline_checked"}
    assert _not_executed(instance, outcome.run_id) == {"after_inline_checked"}
    # The asset value was still yielded before the check failed the step.
    assert _materialized(outcome) == {"inline_checked"}
    assert "after_inline_checked" not in outcome.step_keys(ET.STEP_START)
    assert_every_started_step_ended(instance, outcome.run_id)
