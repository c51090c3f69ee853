"""`dask: {processes: K}`: the local cluster starts while the run's first steps run, its
workers are forked from a server that imported Dagster once, and a run that ends (or
fails) before the cluster is up leaves no worker behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import dagster as dg
import psutil

import dask
from dagloop.runtime.dask_client import LOCAL_WORKERS_TIMEOUT_SECONDS
from dagloop.runtime.forkserver import preloaded_start_method
from tests.dagster import compute_log_reading as logs
from tests.dagster.conftest import (
    assert_every_started_step_ended,
    records,
    run_job,
    wait_until,
)
from tests.dagster.interrupt_audit import audit_run
from tests.dagster.jobs.printing import marker
from tests.dask import fault_jobs, jobs
from tests.dask.lost_reading import lost_events, step_errors

E = dg.DagsterEventType


def _processes(**extra: object) -> dict[str, object]:
    return {"execution": {"config": {"dask": {"processes": 2, **extra}}}}


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _forked_workers() -> list[psutil.Process]:
    """Processes forked by a forkserver of this process: local-cluster workers."""
    me = psutil.Process()
    return [
        worker
        for server in me.children()
        if "forkserver" in " ".join(server.cmdline())
        for worker in server.children()
    ]


def test_local_steps_run_while_the_cluster_starts_and_workers_see_the_environment(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    for mark in ("first run", "set after the forkserver started"):
        os.environ["DAGLOOP_TEST_MARK"] = mark
        try:
            outcome = run_job(
                jobs.head_start, sqlite_instance, _processes(), outputs=("on_worker",)
            )
        finally:
            del os.environ["DAGLOOP_TEST_MARK"]
        assert outcome.success
        seen = outcome.outputs["on_worker"]
        # The local step began before the cluster was ready (and ended: it takes ms).
        stored = [
            (r.dagster_event.event_type, r.step_key, r.dagster_event.message or "")
            for r in records(sqlite_instance, outcome.run_id)
            if r.dagster_event is not None
        ]
        ready = next(
            i for i, (_, _, message) in enumerate(stored) if "Dask cluster is ready" in message
        )
        assert any(t == E.STEP_SUCCESS and key == "first_local" for t, key, _ in stored[:ready])
        # Forked by the forkserver, not spawned by this process (the nannies' home).
        assert seen["parent_pid"] != os.getpid()
        # A forked worker gets this process's environment as it is at the cluster's
        # start, not as it was when the forkserver started.
        assert seen["mark"] == mark
    wait_until(lambda: _forked_workers() == [], timeout=30)


def _lent_run(
    instance: dg.DagsterInstance, tmp_path: Path, lent: int | None, meet: bool = True
) -> tuple[dict[str, int], str]:
    """Run the job whose first two steps are placed on the cluster by default and (with
    `meet`) each wait until the other began; the process each step ran in, and the
    cluster's ready event."""
    markers = tmp_path / f"early-{lent}-{meet}"
    markers.mkdir()
    config = _processes(**({} if lent is None else {"steps_on_loop_while_starting": lent}))
    early = {"config": {"marker_dir": str(markers), "meet": meet}}
    config["ops"] = {"early_a": early, "early_b": early}
    outcome = run_job(jobs.lent_while_starting, instance, config, outputs=("after_ready",))
    assert outcome.success
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit
    records = outcome.outputs["after_ready"]
    assert all(record.get("met", True) for record in records)
    pids = {record["name"]: record["pid"] for record in records}
    # Each step's output is in its own capture, whether it was lent or ran on a worker.
    _, per_step = logs.run_and_step_captures(instance, outcome.run_id)
    for name, log_key in per_step.items():
        assert logs.markers(logs.read(instance, log_key)[0]) == [marker(name, 0)]
    assert sorted(per_step) == sorted(pids)
    messages = [e.message or "" for e in outcome.of_type(E.ENGINE_EVENT)]
    ready = next(m for m in messages if "Dask cluster is ready" in m)
    return pids, ready


def test_a_step_placed_by_default_runs_on_the_loop_while_the_cluster_starts(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    pids, ready = _lent_run(sqlite_instance, tmp_path, None)  # one lent at a time
    here = os.getpid()
    # One was lent; the other waited for a place (it could not begin before the lent
    # one ended, and that one waited for it): the cluster, once ready.
    assert sorted([pids["early_a"] == here, pids["early_b"] == here]) == [False, True]
    # Tagged for the cluster: never lent. Started once the cluster was ready: a worker.
    assert pids["tagged_for_cluster"] != here
    assert pids["after_ready"] != here
    assert "1 step attempt(s) ran on the run's loop meanwhile (early_" in ready
    wait_until(lambda: _forked_workers() == [], timeout=30)


def test_a_step_waiting_for_a_place_takes_the_loops_as_soon_as_it_is_free(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """The lent step ends at once, long before the cluster is ready: the step that
    waited for a place takes the loop's, rather than queueing for the cluster."""
    pids, ready = _lent_run(sqlite_instance, tmp_path, None, meet=False)
    here = os.getpid()
    assert pids["early_a"] == pids["early_b"] == here
    assert pids["tagged_for_cluster"] != here and pids["after_ready"] != here
    assert "2 step attempt(s) ran on the run's loop meanwhile" in ready
    wait_until(lambda: _forked_workers() == [], timeout=30)


def test_how_many_steps_are_lent_at_once_is_configured(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    here = os.getpid()
    pids, ready = _lent_run(sqlite_instance, tmp_path, 2)
    assert pids["early_a"] == pids["early_b"] == here
    assert pids["tagged_for_cluster"] != here and pids["after_ready"] != here
    assert "2 step attempt(s) ran on the run's loop meanwhile" in ready
    pids, ready = _lent_run(sqlite_instance, tmp_path, 0)
    assert here not in pids.values()
    assert "meanwhile" not in ready
    wait_until(lambda: _forked_workers() == [], timeout=30)


def test_a_run_that_ends_while_its_cluster_starts_leaves_no_worker(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.gate_fails_first, sqlite_instance, _processes())
    assert not outcome.success
    assert outcome.step_keys(E.STEP_FAILURE) == {"gate_fails"}
    assert outcome.step_keys(E.STEP_START) == {"gate_fails"}
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)
    # The cluster was given up on as it started: closed, its workers gone.
    wait_until(lambda: _forked_workers() == [], timeout=30)


def test_a_cluster_that_fails_to_start_fails_the_run_and_stops_its_local_steps(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    config = _processes()
    config["ops"] = {"first_local": {"config": {"seconds": 600.0}}}
    started = time.monotonic()
    # Newer Dask fails the start at once; distributed 2024.1 never ends it (the run
    # gives up after LOCAL_WORKERS_TIMEOUT_SECONDS).
    with dask.config.set({"distributed.worker.multiprocessing-method": "no-such-method"}):
        outcome = run_job(jobs.head_start, sqlite_instance, config)
    assert time.monotonic() - started < LOCAL_WORKERS_TIMEOUT_SECONDS + 60, "not stopped"
    assert not outcome.success
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    error = str(failure.event_specific_data.error)
    assert "Nanny failed to start" in error or "did not start within" in error
    # The local step had begun: it was stopped, with its terminal event; the cluster
    # step never began.
    assert outcome.step_keys(E.STEP_START) == {"first_local"}
    assert outcome.step_keys(E.STEP_FAILURE) == {"first_local"}
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)


def test_a_start_method_the_user_configured_is_kept() -> None:
    assert preloaded_start_method("fork", ["dagster"]) == "fork"
    assert preloaded_start_method("spawn", ["dagster"]) == "forkserver"


#: Run in a fresh interpreter: the forkserver is one per process, and keeps the modules
#: of whichever cluster started it first.
WORKER_SETTINGS = """
import asyncio, dask
from dagloop.runtime.dask_client import dask_client

async def main():
    async with dask_client(
        address=None, processes=1, threads_per_worker=1, preload=("dagster",)
    ) as client:
        def seen():
            import sys
            return dask.config.get("distributed.worker.profile.enabled"), "dagster" in sys.modules
        print(list((await client.run(seen)).values()))

if __name__ == "__main__":
    asyncio.run(main())
"""


def test_local_workers_do_not_profile_and_start_with_the_preloaded_modules(
    tmp_path: Path,
) -> None:
    script = tmp_path / "settings.py"
    script.write_text(WORKER_SETTINGS)
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    # No dashboard: sampling the worker's loop for its profile would be wasted CPU. The
    # worker did not import Dagster: it was forked with it.
    assert done.stdout.strip().splitlines()[-1] == "[(False, True)]"


#: A stand-in for an optional package of Dask's that records where it was imported from.
OPTIONAL_PACKAGE = """
import os, traceback
with open(os.environ["IMPORTED_MARKER"], "a") as marker:
    marker.write("".join(traceback.format_stack()) + "\\n---\\n")
"""


def test_starting_a_local_cluster_imports_none_of_dasks_optional_packages(
    tmp_path: Path,
) -> None:
    """Dask's nanny would import every package it can use (pandas...) into the run
    process before forking a worker; the forkserver already runs with its own list.
    (distributed 2024.1 still imports them to report its versions when a worker
    registers: that is Dask's own check, not a preload.)"""
    import distributed.utils

    from dagloop.runtime.forkserver import DASK_PRELOAD_FLAG

    assert isinstance(getattr(distributed.utils, DASK_PRELOAD_FLAG), bool)
    from distributed.versions import optional_packages

    # Names (newer releases) or (name, version getter) pairs (distributed 2024.1).
    names = [package[0] if isinstance(package, tuple) else package for package in optional_packages]
    assert "pandas" in names
    fake = tmp_path / "site" / "pandas"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text(OPTIONAL_PACKAGE)
    marker = tmp_path / "pandas-imported"
    script = tmp_path / "settings.py"
    script.write_text(WORKER_SETTINGS)
    env = {
        **os.environ,
        "IMPORTED_MARKER": str(marker),
        "PYTHONPATH": os.pathsep.join([str(tmp_path / "site"), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=120, env=env
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[(False, True)]"
    imports = marker.read_text() if marker.exists() else ""
    assert "get_mp_context" not in imports


def test_a_worker_that_replaces_a_killed_one_takes_the_runs_steps(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """The run's session opens on every worker that joins the cluster while the run
    goes on: here the process the nanny starts in place of a killed worker."""
    markers = tmp_path / "markers"
    markers.mkdir()
    first: set[int] = set()

    def kill_a_worker() -> None:
        wait_until(lambda: len(list(markers.iterdir())) >= 4, 120)
        first.update(pid for pids in fault_jobs.ran(markers).values() for pid in pids)
        os.kill(min(first), signal.SIGKILL)

    killer = threading.Thread(target=kill_a_worker, daemon=True)
    killer.start()
    op_config = {"config": {"marker_dir": str(markers), "seconds": 0.5}}
    # Nothing lent to the loop: every step's process is a worker the test may kill.
    config = _processes(steps_per_worker=1, steps_on_loop_while_starting=0)
    config["ops"] = {"waits": op_config, "works": op_config}
    outcome = run_job(fault_jobs.mapped, sqlite_instance, config)
    killer.join(timeout=60)
    ran_in = {pid for pids in fault_jobs.ran(markers).values() for pid in pids}
    assert ran_in - first, "no step ran on the worker that replaced the killed one"
    audit = audit_run(sqlite_instance, outcome.run_id)
    assert audit.exact, audit
    wait_until(lambda: _forked_workers() == [], timeout=30)


def test_a_lost_worker_of_a_local_cluster_is_ended_and_its_write_lock_released(
    sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A local worker stopped while it holds the write lock of the run's SQLite event
    log: no process can store anything until it is gone. Once the heartbeat timeout
    says it is lost, the run kills its process (it started it, on this machine), the
    lock is free, and the run stores every other step's entries and ends, the stopped
    worker's step failed once. The process stays stopped throughout: only its end
    releases the lock."""
    markers = tmp_path / "markers"
    markers.mkdir()
    stopped: list[int] = []

    def stop_the_lock_holder() -> None:
        wait_until(lambda: any(p.name.startswith("holding@") for p in markers.iterdir()), 120)
        (holding,) = [p for p in markers.iterdir() if p.name.startswith("holding@")]
        stopped.append(int(holding.name.split("@")[1]))
        os.kill(stopped[0], signal.SIGSTOP)

    stopper = threading.Thread(target=stop_the_lock_holder, daemon=True)
    stopper.start()
    config = _processes(steps_on_loop_while_starting=0, heartbeat_timeout_seconds=3.0)
    config["ops"] = {
        "holds_the_event_log": {"config": {"marker_dir": str(markers)}},
        "works": {"config": {"marker_dir": str(markers), "seconds": 0.2}},
    }
    try:
        outcome = run_job(fault_jobs.holds_the_log, sqlite_instance, config)
    finally:
        stopper.join(timeout=120)
        ended = [pid for pid in stopped if not _alive(pid)]
        for pid in set(stopped) - set(ended):
            os.kill(pid, signal.SIGKILL)  # left stopped: no other test's business
    assert stopped, "the lock holder never began"
    pid = stopped[0]
    assert ended == [pid], "the run left the lost worker's process alive"
    entries = records(sqlite_instance, outcome.run_id)
    lost = lost_events(entries)
    assert len(lost) == 1
    lost_steps = set(lost[0].engine_event_data.metadata["lost_steps"].value)
    assert "holds_the_event_log" in lost_steps
    assert f"the run ended its process (pid {pid})" in (lost[0].message or "")
    # The steps that ran on the stopped worker failed once each, as lost; every other
    # step's entries were stored once the lock was free, and it succeeded.
    failed = Counter((key, error.cls_name) for key, error in step_errors(entries))
    assert failed == Counter((key, "WorkerLostError") for key in lost_steps)
    successes = {
        r.step_key
        for r in entries
        if r.dagster_event is not None and r.dagster_event.event_type == E.STEP_SUCCESS
    }
    mapped = {f"works[{i}]" for i in range(fault_jobs.WIDTH)}
    assert successes == (mapped | {"produce"}) - lost_steps
    audit = audit_run(sqlite_instance, outcome.run_id)
    assert audit.exact, audit
