"""The event log never lies: a storage outage mid-run is waited out (every entry stored)
or fails the run loudly, never SUCCESS with entries missing; in-process listeners and
direct writes see exactly the stored entries. Every test runs real Dagster runs."""

from __future__ import annotations

import re
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg

from tests.dagster.conftest import (
    assert_every_started_step_ended,
    home_dir,
    of_type,
    records,
    run_job,
    wait_for_starts,
)
from tests.dagster.jobs import termination as jobs
from tests.postgres_server import PgServer

E = dg.DagsterEventType


def _break_run_shard(home: Path, run_id: str, seconds: float) -> None:
    """Make the run's SQLite shard unopenable for `seconds`: the file is moved aside and
    a directory stands in its place (root ignores file modes, so no chmod)."""
    shard = home / "history" / "runs" / f"{run_id}.db"
    aside = shard.with_suffix(".aside")
    shutil.move(shard, aside)
    shard.mkdir()
    time.sleep(seconds)
    shard.rmdir()
    shutil.move(aside, shard)


def _break_storage_mid_run(instance: dg.DagsterInstance, seconds: float) -> threading.Thread:
    def run() -> None:
        run_id = wait_for_starts(instance, 40)
        _break_run_shard(home_dir(instance), run_id, seconds)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_short_storage_outage_is_retried_and_nothing_is_lost(home: dg.DagsterInstance) -> None:
    breaker = _break_storage_mid_run(home, 1.0)
    outcome = run_job(jobs.storage_fault_job, home)
    breaker.join()
    assert outcome.success
    entries = records(home, outcome.run_id)
    assert len(of_type(entries, E.STEP_SUCCESS)) == 152
    assert_every_started_step_ended(home, outcome.run_id)


def test_a_long_storage_outage_fails_the_run_loudly(home: dg.DagsterInstance) -> None:
    breaker = _break_storage_mid_run(home, 6.0)
    outcome = run_job(jobs.storage_fault_job, home)
    breaker.join()
    assert not outcome.success
    assert outcome.status == dg.DagsterRunStatus.FAILURE
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    assert "could not store" in str(failure.event_specific_data.error)


def test_postgres_stopped_mid_run_never_reports_success_with_entries_missing(
    postgres_instance: dg.DagsterInstance, postgres_server: PgServer
) -> None:
    """The server goes away for 8 s mid-run (`pg_ctl stop -m fast` cuts every
    connection). Either the writes wait it out (dagster-postgres reconnects for ~6 s per
    attempt, then dagloop retries) and every entry is stored, or the run fails with the
    storage error; never SUCCESS with entries missing."""

    def outage() -> None:
        wait_for_starts(postgres_instance, 40)
        postgres_server.stop()
        time.sleep(8.0)
        postgres_server.start()

    breaker = threading.Thread(target=outage, daemon=True)
    breaker.start()
    outcome = run_job(jobs.storage_fault_job, postgres_instance)
    breaker.join()
    run = postgres_instance.get_run_by_id(outcome.run_id)
    assert run is not None
    entries = records(postgres_instance, outcome.run_id)
    if outcome.success:
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert len(of_type(entries, E.STEP_SUCCESS)) == 152
        assert_every_started_step_ended(postgres_instance, outcome.run_id)
    else:
        assert run.status == dg.DagsterRunStatus.FAILURE
        (failure,) = outcome.of_type(E.RUN_FAILURE)
        assert "could not store" in str(failure.event_specific_data.error)


def test_in_process_listeners_see_every_entry(sqlite_instance: dg.DagsterInstance) -> None:
    seen: list[dg.EventLogEntry] = []
    registered = threading.Event()
    original = sqlite_instance.handle_new_event

    def register_on_first_entry(entry: dg.EventLogEntry, **kwargs: Any) -> None:
        if not registered.is_set():
            registered.set()
            sqlite_instance.add_event_listener(entry.run_id, seen.append)
        original(entry, **kwargs)

    sqlite_instance.handle_new_event = register_on_first_entry  # type: ignore[method-assign]
    try:
        outcome = run_job(jobs.storage_fault_job, sqlite_instance)
    finally:
        del sqlite_instance.handle_new_event
    assert outcome.success
    stored = records(sqlite_instance, outcome.run_id)
    # Every entry, batched or not, reached the listener once it was stored, in order.
    assert [(r.timestamp, r.message) for r in seen] == [(r.timestamp, r.message) for r in stored]
    assert len(of_type(seen, E.STEP_SUCCESS)) == 152


def test_direct_writes_store_the_same_entries(sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.direct_job, sqlite_instance)
    assert outcome.success
    entries = records(sqlite_instance, outcome.run_id)
    assert len(of_type(entries, E.STEP_SUCCESS)) == 32
    (summary,) = [r.message for r in entries if "event-log entries of this run" in r.message]
    written, writes = re.findall(r"\d+", summary)
    assert written == writes  # one write per entry, as Dagster does
