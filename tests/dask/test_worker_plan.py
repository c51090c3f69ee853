"""`WorkerPlan`: the steps the run process sends, found in a worker's own copy of the
run's plan, on a real Dagster plan (producer -> mapped -> collect)."""

from __future__ import annotations

import dagster as dg
import pytest
from dagster_shared.check import CheckError

from dagloop.dagster._internals import create_execution_plan
from dagloop.dagster.dask.worker_plan import WorkerPlan


@dg.op(out=dg.DynamicOut(int))
def produce():  # type: ignore[no-untyped-def]
    yield dg.DynamicOutput(1, mapping_key="one")


@dg.op
def work(value: int) -> int:
    return value


@dg.op
def total(values: list[int]) -> int:
    return sum(values)


@dg.job
def plan_job() -> None:
    total(produce().map(work).collect())


def test_mapped_and_collect_steps_once_the_mappings_arrived() -> None:
    plan = WorkerPlan(create_execution_plan(plan_job))
    plan.mappings_received({"produce": {"result": ["one", "two"]}})
    assert plan.step("work[two]").key == "work[two]"
    assert plan.step("total").key == "total"


def test_a_collect_step_on_a_worker_that_ran_no_mapped_step() -> None:
    """The collect step is in the plan, unresolved, under its own key: it is resolved
    with the mappings all the same."""
    plan = WorkerPlan(create_execution_plan(plan_job))
    plan.mappings_received({"produce": {"result": ["one"]}})
    assert plan.step("total").get_execution_dependency_keys() == {"work[one]"}


def test_streamed_steps_before_the_producer_finished_then_the_collect() -> None:
    plan = WorkerPlan(create_execution_plan(plan_job))
    plan.mappings_received({})  # what the run sends first: the producer has not finished
    assert plan.step("work[one]").key == "work[one]"
    assert plan.step("work[two]").key == "work[two]"
    plan.mappings_received({"produce": {"result": ["one", "two", "three"]}})
    assert plan.step("total").get_execution_dependency_keys() == {
        "work[one]",
        "work[two]",
        "work[three]",
    }
    assert plan.step("work[three]").key == "work[three]"


def test_a_step_the_plan_cannot_have_fails_as_in_dagster() -> None:
    plan = WorkerPlan(create_execution_plan(plan_job))
    with pytest.raises(CheckError, match="UnresolvedCollectExecutionStep"):
        plan.step("total")  # no mapping yet: its producer has not finished
    with pytest.raises(CheckError, match="no step with key elsewhere"):
        plan.step("elsewhere")
