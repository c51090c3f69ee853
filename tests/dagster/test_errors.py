"""The errors of the Dagster integration: one hierarchy under `DagloopError` that keeps
each error's Dagster or builtin base; bad op tags fail a run with `ExecutorConfigError`
before any step starts; the config schema's defaults are the dataclass's."""

import dataclasses
import re
from typing import Any

import dagster as dg
import pytest

import dagloop
import dagloop.dagster
import dagloop.engine.errors
import dagloop.errors
from dagloop.dagster import (
    PLACEMENT_TAG,
    STEP_TIMEOUT_TAG,
    STREAM_TAG,
    AsyncExecutorConfig,
    EventLogWriteError,
    ExecutorConfigError,
    StepTimeoutError,
    async_executor,
    execute_in_process,
)
from dagloop.dagster.config import default_sync_threads
from dagloop.dagster.dask import DaskConfig
from dagloop.errors import DagloopError
from tests.dagster.conftest import run_job

E = dg.DagsterEventType


# -- the hierarchy ------------------------------------------------------------------------


def test_one_root_for_the_engine_and_the_dagster_integration() -> None:
    assert dagloop.DagloopError is dagloop.engine.errors.DagloopError is dagloop.errors.DagloopError
    assert issubclass(dagloop.GraphError, DagloopError)
    assert issubclass(dagloop.NodeTimeoutError, DagloopError)
    for name in ("ExecutorConfigError", "StepTimeoutError", "EventLogWriteError"):
        assert issubclass(getattr(dagloop.dagster, name), DagloopError), name


def test_executor_config_error_is_a_dagster_invalid_config_error() -> None:
    error = ExecutorConfigError("max_concurrent", 0, "expected a positive integer")
    assert isinstance(error, DagloopError)
    assert isinstance(error, dg.DagsterInvalidConfigError)
    assert isinstance(error, dg.DagsterError)
    assert str(error) == (
        "Invalid value for execution config key 'max_concurrent': 0 (expected a positive integer)."
    )
    assert (error.key, error.value, error.op_name, error.step_key) == (
        "max_concurrent",
        0,
        None,
        None,
    )


def test_executor_config_error_of_an_op_tag_names_the_op_the_step_and_the_tag() -> None:
    error = ExecutorConfigError(
        PLACEMENT_TAG, "moon", "one of 'local', 'cluster'", op_name="op", step_key="op[1]"
    )
    assert str(error) == (
        "Op 'op' (step 'op[1]'): tag 'dagloop/placement' must be one of 'local', "
        "'cluster', got 'moon'."
    )
    assert (error.key, error.value, error.op_name, error.step_key) == (
        PLACEMENT_TAG,
        "moon",
        "op",
        "op[1]",
    )


def test_step_timeout_error_is_a_timeout_error() -> None:
    error = StepTimeoutError("slow", "slow[2]", 1.5)
    assert isinstance(error, DagloopError)
    assert isinstance(error, TimeoutError)
    assert str(error) == (
        "Op 'slow' (step 'slow[2]') exceeded its time budget of 1.5 s and was cancelled."
    )
    assert (error.op_name, error.step_key, error.budget) == ("slow", "slow[2]", 1.5)
    with pytest.raises(TimeoutError, match=re.escape("time budget of 1.5 s")):
        raise error


def test_event_log_write_error_is_a_dagster_error() -> None:
    error = EventLogWriteError("dagloop could not store 1 event-log entry")
    assert isinstance(error, DagloopError)
    assert isinstance(error, dg.DagsterError)
    assert str(error) == "dagloop could not store 1 event-log entry"


@pytest.mark.parametrize(
    ("config", "key"),
    [
        ({"max_concurrent": 0}, "max_concurrent"),
        ({"sync_threads": -1}, "sync_threads"),
        ({"termination_grace_seconds": -1.0}, "termination_grace_seconds"),
        ({"blocked_loop_warning_seconds": float("nan")}, "blocked_loop_warning_seconds"),
        ({"tag_concurrency_limits": [{"key": "k", "limit": 0}]}, "tag_concurrency_limits"),
        ({"dask": {}}, "dask"),
        ({"dask": {"processes": 0}}, "dask.processes"),
        ({"dask": {"address": " "}}, "dask.address"),
        ({"dask": {"processes": 1, "steps_per_worker": 0}}, "dask.steps_per_worker"),
    ],
)
def test_every_config_value_out_of_range_raises_executor_config_error(
    config: dict[str, object], key: str
) -> None:
    with pytest.raises(ExecutorConfigError, match=re.escape(f"key '{key}")) as raised:
        AsyncExecutorConfig.from_config(config)
    assert isinstance(raised.value, DagloopError)
    assert raised.value.key.startswith(key)


# -- bad op tags in a real run ----------------------------------------------------------


@dg.op
async def fine() -> int:
    return 1


@dg.op(tags={STEP_TIMEOUT_TAG: "soon"})
async def bad_budget() -> int:
    return 1


@dg.op(tags={PLACEMENT_TAG: "moon"})
async def bad_placement() -> int:
    return 1


@dg.op(out=dg.DynamicOut(int), tags={STREAM_TAG: "maybe"})
async def bad_stream():
    yield dg.DynamicOutput(1, mapping_key="one")


@dg.op
async def double(value: int) -> int:
    return 2 * value


@dg.job(executor_def=async_executor)
def bad_budget_job() -> None:
    fine()
    bad_budget()


@dg.job(executor_def=async_executor)
def bad_placement_job() -> None:
    fine()
    bad_placement()


@dg.job(executor_def=async_executor)
def bad_stream_job() -> None:
    fine()
    bad_stream().map(double)


BAD_TAGS = pytest.mark.parametrize(
    ("job", "op_name", "tag", "value"),
    [
        (bad_budget_job, "bad_budget", STEP_TIMEOUT_TAG, "soon"),
        (bad_placement_job, "bad_placement", PLACEMENT_TAG, "moon"),
        (bad_stream_job, "bad_stream", STREAM_TAG, "maybe"),
    ],
    ids=["step_timeout", "placement", "stream"],
)


@BAD_TAGS
def test_a_bad_op_tag_fails_the_run_with_executor_config_error_before_any_step(
    ephemeral_instance: dg.DagsterInstance,
    job: dg.JobDefinition,
    op_name: str,
    tag: str,
    value: str,
) -> None:
    outcome = run_job(job, ephemeral_instance)
    assert not outcome.success
    assert outcome.of_type(E.STEP_START) == []
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    error = failure.event_specific_data.error
    assert error.cls_name == "ExecutorConfigError"
    assert f"Op '{op_name}' (step '{op_name}'): tag '{tag}'" in error.message
    assert f"got {value!r}" in error.message


@BAD_TAGS
def test_a_bad_op_tag_raises_executor_config_error_naming_the_op_and_the_tag(
    job: dg.JobDefinition, op_name: str, tag: str, value: str
) -> None:
    with dg.instance_for_test() as instance:
        with pytest.raises(ExecutorConfigError) as raised:
            execute_in_process(job, instance=instance)
        (run,) = instance.get_runs()
        started = instance.get_records_for_run(run.run_id, of_type=E.STEP_START, limit=1).records
    assert started == []
    error = raised.value
    assert isinstance(error, DagloopError)
    assert (error.op_name, error.step_key, error.key, error.value) == (
        op_name,
        op_name,
        tag,
        value,
    )


# -- one statement of each default ------------------------------------------------------


@dg.job(executor_def=async_executor)
def fine_job() -> None:
    fine()


def _executor_config(run_config: dict[str, Any]) -> dict[str, Any]:
    """The executor's config as Dagster's schema fills it in."""
    execution = dg.validate_run_config(fine_job, run_config)["execution"]
    (config,) = execution.values()
    return dict(config)


def test_the_dataclass_defaults_are_the_executor_defaults() -> None:
    default = AsyncExecutorConfig()
    assert default.sync_threads == default_sync_threads()
    assert AsyncExecutorConfig.from_config({}) == default
    assert AsyncExecutorConfig.from_config(_executor_config({})) == default


def test_the_schema_offers_the_dataclass_defaults() -> None:
    fields = async_executor.config_schema.config_type.fields
    plain = {
        f.name: f.default
        for f in dataclasses.fields(AsyncExecutorConfig)
        if f.default is not dataclasses.MISSING
    }
    offered = {
        name: field.default_value
        for name, field in fields.items()
        if name in plain and field.default_provided
    }
    assert offered == {name: plain[name] for name in offered}
    assert set(offered) == {
        "max_concurrent",
        "step_host",
        "step_timeout_seconds",
        "blocked_loop_warning_seconds",
        "termination_grace_seconds",
        "event_log_writes",
        "compute_logs",
        "dask",
    }
    # Unset in the schema: the dataclass resolves it where the run executes.
    assert fields["sync_threads"].default_value is None


def test_the_dask_defaults_are_the_dataclass_defaults() -> None:
    filled = _executor_config({"execution": {"config": {"dask": {"processes": 2}}}})
    assert DaskConfig.from_config(filled["dask"]) == DaskConfig(processes=2)
    assert DaskConfig.from_config({"processes": 2}) == DaskConfig(processes=2)


def test_unset_sync_threads_is_resolved_in_a_real_run(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(fine_job, ephemeral_instance)
    assert outcome.success
    (started,) = [
        e
        for e in outcome.of_type(E.ENGINE_EVENT)
        if (e.message or "").startswith("Executing steps on one asyncio event loop")
    ]
    assert f"; {default_sync_threads()} worker threads for sync steps" in (started.message or "")
