"""Compute logs of a run whose steps run on a Dask cluster: those steps' output is not
captured in the run's process, so the run-level capture names them for the UI."""

from __future__ import annotations

import dagster as dg

from tests.dagster.conftest import run_job
from tests.dask import jobs

E = dg.DagsterEventType


def test_the_run_capture_names_the_steps_placed_on_the_cluster(
    address: str, sqlite_instance: dg.DagsterInstance
) -> None:
    config = {"execution": {"config": {"dask": {"address": address}}}}
    outcome = run_job(jobs.fanout, sqlite_instance, config)
    assert outcome.success
    records = sqlite_instance.all_logs(outcome.run_id, of_type=E.LOGS_CAPTURED)
    first = records[0].dagster_event
    assert first is not None
    # The plan's steps that run on the cluster; `collect` is tagged to run locally, where
    # it gets a capture of its own when it writes.
    assert list(first.logs_captured_data.step_keys) == ["source", "fan_out"]
