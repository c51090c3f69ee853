"""Issue 6: steps of one run on a real Dask cluster (two worker processes)."""

from __future__ import annotations

import itertools
import os
import threading
import time
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from dagster._core.definitions.job_base import InMemoryJob  # test-only: not reconstructable
from dagster._core.execution.api import execute_run, execute_run_iterator  # test-only

from dagloop.dagster._internals.fenced_writes import SQLITE_HOLD_SUFFIX
from tests.dagster.conftest import assert_every_started_step_ended, run_job
from tests.dask import jobs

E = dg.DagsterEventType


def _on(address: str, **extra: Any) -> dict[str, Any]:
    return {"execution": {"config": {"dask": {"address": address}, **extra}}}


def _stored(
    instance: dg.DagsterInstance, run_id: str, event_type: dg.DagsterEventType
) -> list[str]:
    return [
        r.dagster_event.step_key or ""
        for r in instance.all_logs(run_id)
        if r.dagster_event is not None and r.dagster_event.event_type == event_type
    ]


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
def test_fan_out_runs_on_both_workers_and_collect_runs_locally(
    address: str, storage_instance: dg.DagsterInstance
) -> None:
    instance = storage_instance
    outcome = run_job(jobs.fanout, instance, _on(address), outputs=("collect",))
    assert outcome.success
    collected = outcome.outputs["collect"]
    assert collected["values"] == list(range(1, jobs.WIDTH + 1))
    # Mapped steps ran in the two worker processes; `collect` (tag: local) on the run's loop.
    assert len(collected["pids"]) == 2 and os.getpid() not in collected["pids"]
    assert collected["collector_pid"] == os.getpid()
    # Each event is stored once (by the worker) though the caller received it too.
    successes = _stored(instance, outcome.run_id, E.STEP_SUCCESS)
    assert sorted(successes) == sorted(set(successes))
    assert set(successes) == outcome.step_keys(E.STEP_SUCCESS)
    assert len(successes) == 2 + 2 * jobs.WIDTH + 1
    # The six 0.5 s async steps overlapped: each worker hosts several steps at once.
    spans: dict[str, list[float]] = {}
    for record in instance.all_logs(outcome.run_id):
        event = record.dagster_event
        if event is None or "slow_async" not in (event.step_key or ""):
            continue
        if event.event_type in (E.STEP_START, E.STEP_SUCCESS):
            spans.setdefault(event.step_key or "", []).append(record.timestamp)
    assert len(spans) == jobs.WIDTH
    first_end = min(end for _, end in spans.values())
    # Three of them on two workers: at least one worker hosted two at once (more on a
    # quiet machine; a loaded one staggers the starts).
    assert sum(1 for start, _ in spans.values() if start < first_end) >= 3
    assert_every_started_step_ended(instance, outcome.run_id)


def test_events_reach_the_caller_live(address: str, sqlite_instance: dg.DagsterInstance) -> None:
    run = sqlite_instance.create_run_for_job(job_def=jobs.live_job, run_config=_on(address))
    seen: dict[str, float] = {}
    for event in execute_run_iterator(dg.reconstructable(jobs.live), run, sqlite_instance):
        if event.event_type == E.STEP_SUCCESS and event.step_key is not None:
            seen[event.step_key] = time.monotonic()
    assert set(seen) == {"quick", "takes_two_seconds"}
    # `quick` was reported as soon as it ended, not when the run ended.
    assert seen["takes_two_seconds"] - seen["quick"] > 1.0


def test_retries_skips_and_failures(
    address: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    config = _on(address)
    config["ops"] = {"flaky": {"config": {"marker_dir": str(tmp_path)}}}
    outcome = run_job(jobs.retries_skips, sqlite_instance, config)
    assert not outcome.success
    assert len(outcome.of_type(E.STEP_UP_FOR_RETRY)) == 2
    assert {"flaky", "branch", "after_taken"} <= outcome.step_keys(E.STEP_SUCCESS)
    assert outcome.step_keys(E.STEP_SKIPPED) == {"after_not_taken"}
    assert outcome.step_keys(E.STEP_FAILURE) == {"always_fails"}
    (failure,) = outcome.of_type(E.STEP_FAILURE)
    assert "boom on the cluster" in str(failure.step_failure_data.error)
    assert "downstream_of_failure" not in outcome.step_keys(E.STEP_START)
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


def test_pool_limits_hold_across_workers(address: str, sqlite_instance: dg.DagsterInstance) -> None:
    sqlite_instance.event_log_storage.set_concurrency_slots("dagloop-dask-pool", 2)
    outcome = run_job(jobs.pools, sqlite_instance, _on(address), outputs=("pooled_starts",))
    assert outcome.success
    starts = outcome.outputs["pooled_starts"]
    # Two slots, six 0.3 s steps: never three at once, so at least three waves.
    assert starts[-1] - starts[0] >= 0.55
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


def test_tag_concurrency_limits_hold_on_the_cluster(
    address: str, sqlite_instance: dg.DagsterInstance
) -> None:
    config = _on(
        address,
        tag_concurrency_limits=[{"key": "lane", "value": "single", "limit": 1}],
    )
    outcome = run_job(jobs.pools, sqlite_instance, config, outputs=("pooled_starts",))
    assert outcome.success
    starts = outcome.outputs["pooled_starts"]
    gaps = [b - a for a, b in itertools.pairwise(starts)]
    assert min(gaps) >= 0.25  # one at a time


def test_termination_cancels_cluster_steps(
    address: str, sqlite_instance: dg.DagsterInstance
) -> None:
    fired: dict[str, float] = {}

    def cancel_once_started() -> None:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            runs = sqlite_instance.get_runs()
            if runs and {"sleeps_long", "blocks_long", "quick"} <= set(
                _stored(sqlite_instance, runs[0].run_id, E.STEP_START)
            ):
                time.sleep(0.3)
                fired["at"] = time.monotonic()
                sqlite_instance.report_run_canceling(runs[0])
                return
            time.sleep(0.05)

    threading.Thread(target=cancel_once_started, daemon=True).start()
    result = dg.execute_job(
        dg.reconstructable(jobs.long),
        instance=sqlite_instance,
        run_config=_on(address, termination_grace_seconds=2.0),
    )
    returned = time.monotonic()
    assert "at" in fired
    # Cut off: both long steps would take 60 s; with a 2 s grace the run ends in a few
    # seconds on a quiet machine (8.1 s was seen on a loaded one). Half the steps' own
    # time still proves they were stopped, with room for any load.
    assert returned - fired["at"] < 30
    run = sqlite_instance.get_run_by_id(result.run_id)
    assert run is not None and run.status == dg.DagsterRunStatus.CANCELED
    failures = {e.step_key: e for e in result.all_events if e.event_type == E.STEP_FAILURE}
    assert set(failures) == {"sleeps_long", "blocks_long"}
    # The async op was stopped at its await on the worker, by Dagster's own step code.
    assert failures["sleeps_long"].step_failure_data.error.cls_name == (
        "DagsterExecutionInterruptedError"
    )
    assert_every_started_step_ended(sqlite_instance, result.run_id)


def test_placement_tag_and_default(address: str, sqlite_instance: dg.DagsterInstance) -> None:
    config = _on(address)
    config["execution"]["config"]["dask"]["placement"] = "local"
    outcome = run_job(jobs.fanout, sqlite_instance, config, outputs=("collect",))
    assert outcome.success
    assert outcome.outputs["collect"]["pids"] == [os.getpid()]


def test_bad_placement_tag_names_the_tag(address: str, sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.bad_placement, sqlite_instance, _on(address))
    assert not outcome.success
    text = outcome.failure_text()
    assert "Op 'misplaced'" in text and "tag 'dagloop/placement'" in text
    assert outcome.of_type(E.STEP_START) == []
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    assert failure.event_specific_data.error.cls_name == "ExecutorConfigError"


def test_processes_starts_and_closes_a_local_cluster(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    before = {t.name for t in threading.enumerate()}
    # Nothing lent to the run's loop while the cluster starts: every step on a worker.
    dask = {"processes": 2, "steps_per_worker": 8, "steps_on_loop_while_starting": 0}
    config = {"execution": {"config": {"dask": dask}}}
    outcome = run_job(jobs.fanout, sqlite_instance, config, outputs=("collect",))
    assert outcome.success
    assert len(outcome.outputs["collect"]["pids"]) == 2
    messages = [e.message or "" for e in outcome.of_type(E.ENGINE_EVENT)]
    assert any("local Dask cluster of 2 worker processes" in m for m in messages)
    # distributed's offload pool is one thread per process, made on its first use (here
    # by waiting for the workers): not something of the run.
    left = {t.name for t in threading.enumerate()} - before
    assert {name for name in left if not name.startswith("Dask-Offload")} == set()


def test_needs_a_persistent_instance(address: str) -> None:
    with dg.DagsterInstance.ephemeral() as instance:
        outcome = run_job(jobs.fanout, instance, _on(address))
    assert not outcome.success
    assert "multiple processes with an ephemeral DagsterInstance" in outcome.failure_text()
    assert not outcome.of_type(E.STEP_START)


def test_needs_a_reconstructable_job(address: str, sqlite_instance: dg.DagsterInstance) -> None:
    run = sqlite_instance.create_run_for_job(job_def=jobs.fanout_job, run_config=_on(address))
    result = execute_run(InMemoryJob(jobs.fanout_job), run, sqlite_instance)
    assert not result.success
    events = [r.dagster_event for r in sqlite_instance.all_logs(run.run_id) if r.dagster_event]
    text = "\n".join(f"{e.message} {e.event_specific_data!r}" for e in events)
    assert "is not reconstructable" in text
    assert not [e for e in events if e.event_type == E.STEP_START]


@pytest.mark.parametrize(
    ("dask", "key"),
    [
        ({}, "dask"),
        ({"address": "tcp://x:1", "processes": 2}, "dask"),
        ({"processes": 0}, "dask.processes"),
        ({"processes": 2, "steps_per_worker": 0}, "dask.steps_per_worker"),
        ({"processes": 2, "steps_on_loop_while_starting": -1}, "dask.steps_on_loop_while_starting"),
        ({"address": " "}, "dask.address"),
        ({"processes": 2, "heartbeat_timeout_seconds": 1.0}, "dask.heartbeat_timeout_seconds"),
    ],
)
def test_config_errors_name_the_key(
    dask: dict[str, Any], key: str, sqlite_instance: dg.DagsterInstance
) -> None:
    outcome = run_job(jobs.fanout, sqlite_instance, {"execution": {"config": {"dask": dask}}})
    assert not outcome.success
    assert f"Invalid value for execution config key '{key}'" in outcome.failure_text()


def _client_config(address: str, marker_dir: Path, **resource: Any) -> dict[str, Any]:
    config = _on(address)
    config["resources"] = {"client": {"config": {"marker_dir": str(marker_dir), **resource}}}
    return config


def test_resources_open_once_per_worker_and_are_shared_on_its_loop(
    address: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    outcome = run_job(
        jobs.shared_client,
        sqlite_instance,
        _client_config(address, tmp_path),
        outputs=("gather_calls",),
    )
    assert outcome.success
    records = outcome.outputs["gather_calls"]
    assert [r["value"] for r in records] == list(range(jobs.SHARED_WIDTH))
    by_pid: dict[int, list[dict[str, int]]] = {}
    for record in records:
        by_pid.setdefault(record["pid"], []).append(record)
    assert len(by_pid) == 2 and os.getpid() not in by_pid
    for pid, calls in by_pid.items():
        # One client object, opened once, on the one loop that ran all of this worker's
        # steps; its semaphore saw several of them at once.
        assert len({r["client"] for r in calls}) == 1, pid
        assert len({r["loop"] for r in calls}) == 1, pid
        assert max(r["peak"] for r in calls) == jobs.SHARED_LIMIT, pid
    opened = sorted(p.stem for p in tmp_path.glob("*.open"))
    closed = sorted(p.stem for p in tmp_path.glob("*.closed"))
    worker_opens = [stem for stem in opened if int(stem.split("-")[0]) in by_pid]
    assert len(worker_opens) == 2, opened
    # Torn down on every worker before the run ended.
    assert closed == opened
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


def test_a_resource_failing_on_workers_fails_their_steps(
    address: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    config = _client_config(address, tmp_path, only_opens_in_pid=os.getpid())
    outcome = run_job(jobs.shared_client, sqlite_instance, config)
    assert not outcome.success
    failed = outcome.step_keys(E.STEP_FAILURE)
    assert failed == {f"call_client[{i}]" for i in range(jobs.SHARED_WIDTH)}
    assert "database unreachable from pid" in outcome.failure_text()
    assert "gather_calls" not in outcome.step_keys(E.STEP_START)
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


def test_reexecution_from_failure_runs_only_the_failed_mapped_step(
    address: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    config = _on(address)
    config["ops"] = {"fails_in_first_run": {"config": {"marker_dir": str(tmp_path)}}}
    first = run_job(jobs.reexecution, sqlite_instance, config)
    assert not first.success
    assert first.step_keys(E.STEP_FAILURE) == {"fails_in_first_run[2]"}
    options = dg.ReexecutionOptions.from_failure(first.run_id, sqlite_instance)
    with dg.execute_job(
        dg.reconstructable(jobs.reexecution),
        instance=sqlite_instance,
        run_config=config,
        reexecution_options=options,
    ) as again:
        assert again.success
        started = {e.step_key for e in again.all_events if e.event_type == E.STEP_START}
        assert started == {"fails_in_first_run[2]", "total"}
        # Inputs of the re-executed steps came from the parent run's outputs.
        assert again.output_for_node("total") == 10 * sum(range(1, jobs.WIDTH + 1))
    assert_every_started_step_ended(sqlite_instance, again.run_id)


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("writer", ["run", "workers"])
def test_each_entry_is_stored_once_whoever_writes_it(
    writer: str, address: str, storage_instance: dg.DagsterInstance
) -> None:
    instance = storage_instance
    config = _on(address)
    config["execution"]["config"]["dask"]["events_written_by"] = writer
    outcome = run_job(jobs.fanout, instance, config)
    assert outcome.success
    successes = _stored(instance, outcome.run_id, E.STEP_SUCCESS)
    assert sorted(successes) == sorted(set(successes))
    assert len(successes) == 2 + 2 * jobs.WIDTH + 1
    # Worker-side entries (user logs, step events) are there, before the run's end.
    records = list(instance.all_logs(outcome.run_id))
    assert records[-1].dagster_event is not None
    assert records[-1].dagster_event.event_type == E.RUN_SUCCESS
    assert sum(1 for r in records if r.step_key and r.step_key.startswith("slow_async[")) >= (
        4 * jobs.WIDTH
    )
    assert_every_started_step_ended(instance, outcome.run_id)


@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
@pytest.mark.parametrize("writer", ["run", "workers"])
def test_assets_and_their_checks_materialized_on_the_cluster_are_recorded_once(
    writer: str, address: str, storage_instance: dg.DagsterInstance
) -> None:
    """Asset and check events are stored through the instance (the asset index too),
    by whichever process writes the run's entries; each once, and the assets' latest
    materializations are this run's."""
    instance = storage_instance
    config = _on(address)
    config["execution"]["config"]["dask"]["events_written_by"] = writer
    outcome = run_job(jobs.assets_on_cluster, instance, config)
    assert outcome.success, outcome.failure_text()
    run_id = outcome.run_id
    for name in ("raw_numbers", "doubled"):
        latest = instance.get_latest_materialization_event(dg.AssetKey(name))
        assert latest is not None and latest.run_id == run_id
        materialization = latest.asset_materialization
        assert materialization is not None
        # Materialized on a worker, not in this (the run's) process.
        assert materialization.metadata["pid"].value != os.getpid()
    assert sorted(_stored(instance, run_id, E.ASSET_MATERIALIZATION)) == ["doubled", "raw_numbers"]
    evaluations = [
        r.dagster_event.event_specific_data
        for r in instance.all_logs(run_id, of_type=E.ASSET_CHECK_EVALUATION)
        if r.dagster_event is not None
    ]
    assert [(e.check_name, e.passed) for e in evaluations] == [("doubled_is_even", True)]
    started = sorted(_stored(instance, run_id, E.STEP_START))
    assert started == ["doubled", "doubled_doubled_is_even", "raw_numbers"]
    if type(instance.event_log_storage).__name__ == "SqliteEventLogStorage":
        # The file the workers' holds lock is not left beside the run's shard.
        shard = instance.event_log_storage.path_for_shard(run_id)
        assert os.path.exists(shard) and not os.path.exists(shard + SQLITE_HOLD_SUFFIX)
    assert_every_started_step_ended(instance, run_id)


def test_auto_writer_is_the_workers_but_for_storage_in_memory(
    sqlite_instance: dg.DagsterInstance, postgres_instance: dg.DagsterInstance
) -> None:
    from dagloop.dagster.dask.config import DaskConfig
    from dagloop.dagster.dask.run_spec import _who_writes_events

    auto = DaskConfig.from_config({"processes": 2})
    assert auto is not None and auto.events_written_by == "auto"
    assert _who_writes_events(auto, sqlite_instance) == "workers"
    assert _who_writes_events(auto, postgres_instance) == "workers"
    with dg.DagsterInstance.ephemeral() as in_memory:
        assert _who_writes_events(auto, in_memory) == "run"
    chosen = DaskConfig.from_config({"processes": 2, "events_written_by": "run"})
    assert chosen is not None
    assert _who_writes_events(chosen, sqlite_instance) == "run"


def test_a_run_loop_held_past_the_heartbeat_timeout_loses_no_worker(
    address: str, sqlite_instance: dg.DagsterInstance
) -> None:
    """The run's own loop is held (a local step that blocks it) longer than the
    heartbeat timeout: the workers' heartbeats wait unread meanwhile, and are read
    before any worker is taken as silent."""
    config = _on(address, blocked_loop_warning_seconds=60.0)
    config["execution"]["config"]["dask"]["heartbeat_timeout_seconds"] = 3.0
    assert jobs.HOLD_SECONDS > 3.0
    outcome = run_job(jobs.held_loop, sqlite_instance, config)
    assert outcome.success, outcome.failure_text()
    assert not [e for e in outcome.events if "was lost" in (e.message or "")]
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


def test_a_frame_still_arriving_after_a_held_loop_is_not_silence(
    address: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """While the run's loop is held past the heartbeat timeout, a worker sends a frame
    larger than the socket's buffers. Once the loop runs again, the frame takes several
    turns of it to read, and nothing newer has been heard from that worker until it is
    read: the check that comes late, right after the hold, must not take the worker as
    silent."""
    config = _on(address, blocked_loop_warning_seconds=60.0)
    config["execution"]["config"]["dask"]["heartbeat_timeout_seconds"] = 3.0
    config["execution"]["config"]["dask"]["events_written_by"] = "run"
    marker = {"config": {"marker_dir": str(tmp_path)}}
    config["ops"] = {
        "announces_then_holds_the_run_loop": marker,
        "sends_a_big_frame_meanwhile": marker,
    }
    outcome = run_job(
        jobs.big_frame_while_held, sqlite_instance, config, outputs=("sends_a_big_frame_meanwhile",)
    )
    assert outcome.success, outcome.failure_text()
    assert outcome.outputs["sends_a_big_frame_meanwhile"] is True  # it logged during the hold
    assert not [e for e in outcome.events if "was lost" in (e.message or "")]
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)
