"""An async op that blocks the event loop past `blocked_loop_warning_seconds` is reported
on the run at WARNING, naming the op (Dagster logs engine events at DEBUG, which a console
or UI filtered to warnings would hide)."""

from __future__ import annotations

import logging

import dagster as dg

from tests.dagster.conftest import of_type, records, run_job
from tests.dagster.jobs import termination as jobs

E = dg.DagsterEventType


def test_the_blocked_loop_warning_is_logged_at_warning(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.blocking_job, ephemeral_instance)
    assert outcome.success
    (warning,) = [
        r
        for r in of_type(records(ephemeral_instance, outcome.run_id), E.ENGINE_EVENT)
        if "held_seconds" in r.dagster_event.engine_event_data.metadata
    ]
    assert warning.step_key == "blocks_loop"
    assert warning.level == logging.WARNING
    assert "blocked the event loop" in warning.message
    assert "Op 'blocks_loop'" in warning.message
