"""The Dask column of the interrupt stress: runs whose steps are on a Dask cluster,
terminated at random moments, with a worker process SIGKILLed or stopped mid-run, or with
steps over their budgets; every stored event log audited.

Each run is `dagster job execute` of a job of `jobs/dask_stress.py` in a child process on
a SQLite instance, its executor given `dask: {processes: 2}` or `dask: {address: ...}`
(a cluster of `dask scheduler` and 2 `dask worker` on 127.0.0.1, `harness/dask_cluster.py`),
alternating run by run:

* terminations: the run marked CANCELING (as the UI's Terminate does), or the CLI process
  sent SIGTERM (as a run launcher does), at a random moment after a cluster step started;
* worker kills: one worker process (a process hosting steps) SIGKILLed at a random
  moment after a cluster step started; the run goes on;
* worker stops: one worker process SIGSTOPped at such a moment and resumed 1-6 s later,
  with `heartbeat_timeout_seconds: 3`: a short stop is a pause the run rides out, a
  long one makes the run take the worker as lost while it may still store its steps'
  ends as it resumes;
* budgets: 6 sync and 6 async steps over a 0.5 s budget beside 6 that must succeed.

The audit is the tests' (`tests/dagster/interrupt_audit.py`: two terminal events, open
steps, entries after the run's end, terminal events of unstarted steps), plus silent
re-runs: each step's body writes a marker per execution, and executions beyond the
attempts the event log shows started count as silent re-runs. Also counted: runs not
over within `HANG_SECONDS` of the request (their process is killed), and worker
processes of `processes: 2` still alive 10 s after their run's process exited.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg
import psutil
from harness.dask_cluster import CliCluster, cli_cluster, wait_for_worker_count
from harness.proc import BENCH_DIR, is_worker
from jobs import dask_stress as jobs

from tests.dagster.interrupt_audit import GRACE_SECONDS, RunAudit, audit_run

E = dg.DagsterEventType
REPO = Path(BENCH_DIR).parent
MODES = ("processes2", "address")
#: A run not over within this long after the request (or, for budgets and kills, after
#: its start) counts as hung; its process group is killed.
HANG_SECONDS = GRACE_SECONDS + 90
#: Latest moment of a termination or kill, in seconds after a cluster step started.
LATEST = 4.0
#: The stopped-worker runs: the heartbeat timeout, and how long a worker is stopped.
STOP_HEARTBEAT_TIMEOUT = 3.0
STOP_SECONDS = (1.0, 6.0)


@dataclass
class Counts:
    terminations: int = 50
    kills: int = 10
    budget_runs: int = 10
    stops: int = 10


@dataclass
class DaskRun:
    """One run's outcome: the audit and what the stress itself saw."""

    scenario: str
    mode: str
    audit: RunAudit | None
    seconds: float
    hung: bool
    silent_reruns: int = 0
    marker_steps_without_start: int = 0
    leftover_workers: int = 0
    acted: bool = True  # False: the run had ended before the termination or kill
    error: str | None = None
    failures: Counter[str] = field(default_factory=Counter)
    #: STEP_SUCCESS of the budget job's steps that must succeed
    within_budget_succeeded: int = 0
    #: Workers the run took as lost (its engine events saying so)
    lost_workers: int = 0


def _config(mode: str, cluster: CliCluster, **more: Any) -> dict[str, Any]:
    dask: dict[str, Any] = (
        {"processes": 2} if mode == "processes2" else {"address": cluster.address}
    )
    dask.update(more)
    return {"execution": {"config": {"termination_grace_seconds": GRACE_SECONDS, "dask": dask}}}


def _write_config(home: Path, config: dict[str, Any]) -> Path:
    import yaml

    path = home / f"run-{time.monotonic_ns()}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _launch(home: Path, job: str, config: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "DAGSTER_HOME": str(home), "DAGSTER_DISABLE_TELEMETRY": "1"}
    env["PYTHONPATH"] = os.pathsep.join([BENCH_DIR, str(REPO)])
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", "jobs.dask_stress"]
    command += ["-j", job, "-c", str(config)]
    return subprocess.Popen(
        command,
        cwd=BENCH_DIR,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def _new_run(instance: dg.DagsterInstance, before: set[str], child: Any) -> str | None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        runs = [r for r in instance.get_runs(limit=5) if r.run_id not in before]
        if runs:
            return runs[0].run_id
        time.sleep(0.05)
    runs = [r for r in instance.get_runs(limit=5) if r.run_id not in before]
    return runs[0].run_id if runs else None


def _cluster_step_started(instance: dg.DagsterInstance, run_id: str, child: Any) -> bool:
    """Wait until a mapped step (a cluster step) of the run has started."""
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        records = instance.get_records_for_run(run_id, of_type=E.STEP_START, limit=50).records
        if any("[" in (r.event_log_entry.step_key or "") for r in records):
            return True
        time.sleep(0.05)
    return False


def _worker_processes(child: subprocess.Popen[bytes]) -> list[psutil.Process]:
    """The `processes: 2` workers of a run's process: spawned by it, or forked by its
    forkserver (whose command line they share)."""
    with contextlib.suppress(psutil.Error):
        return [
            p
            for p in psutil.Process(child.pid).children(recursive=True)
            if is_worker(" ".join(p.cmdline()), direct=p.ppid() == child.pid)
        ]
    return []


def _markers(root: Path, run_id: str) -> Counter[str]:
    where = root / run_id
    if not where.is_dir():
        return Counter()
    return Counter(name.split("@", 3)[3] for name in os.listdir(where))


def _opens(instance: dg.DagsterInstance, run_id: str) -> Counter[str]:
    opens: Counter[str] = Counter()
    for record in instance.all_logs(run_id, of_type={E.STEP_START, E.STEP_RESTARTED}):
        if record.step_key:
            opens[record.step_key] += 1
    return opens


def one_run(
    home: Path,
    markers: Path,
    cluster: CliCluster,
    scenario: str,
    mode: str,
    job: str,
    act: Callable[[subprocess.Popen[bytes]], bool] | None,
    rng: random.Random,
    **dask: Any,
) -> DaskRun:
    """Launch a run (`dask`: more of its `dask:` config); `act` (after a random delay
    once a cluster step started) terminates it, kills or stops a worker, and says
    whether it could; then wait, audit, count."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        before = {r.run_id for r in instance.get_runs()}
        child = _launch(home, job, _write_config(home, _config(mode, cluster, **dask)))
        workers_seen: dict[int, psutil.Process] = {}
        run_id = _new_run(instance, before, child)
        acted = act is not None
        start = time.monotonic()
        if act is not None and run_id is not None:
            if _cluster_step_started(instance, run_id, child):
                time.sleep(rng.uniform(0.05, LATEST))
            for p in _worker_processes(child):
                workers_seen[p.pid] = p
            acted = child.poll() is None and act(child)
            start = time.monotonic()
        hung = False
        while child.poll() is None:
            for p in _worker_processes(child):
                workers_seen[p.pid] = p
            if time.monotonic() - start > HANG_SECONDS:
                hung = True
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(child.pid, signal.SIGKILL)
                child.wait()
                break
            time.sleep(0.1)
        seconds = time.monotonic() - start
        leftover = _leftover(list(workers_seen.values()))
        if run_id is None:
            return DaskRun(scenario, mode, None, seconds, hung, acted=acted, error="no run")
        audit = audit_run(instance, run_id)
        ran, opens = _markers(markers, run_id), _opens(instance, run_id)
        return DaskRun(
            scenario,
            mode,
            audit,
            seconds,
            hung,
            silent_reruns=sum(max(0, ran[k] - opens[k]) for k in ran),
            marker_steps_without_start=sum(1 for k in ran if opens[k] == 0),
            leftover_workers=leftover,
            acted=acted,
            failures=audit.failures,
            within_budget_succeeded=sum(
                1
                for r in instance.all_logs(run_id, of_type=E.STEP_SUCCESS)
                if (r.step_key or "").startswith("within_budget[")
            ),
            lost_workers=sum(
                1
                for r in instance.all_logs(run_id, of_type=E.ENGINE_EVENT)
                if r.dagster_event is not None
                and "lost_steps" in r.dagster_event.engine_event_data.metadata
            ),
        )


def _leftover(workers: list[psutil.Process], wait: float = 10.0) -> int:
    """Worker processes still alive `wait` s after their run's process exited (killed)."""
    deadline = time.monotonic() + wait
    alive = [p for p in workers if p.is_running()]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    for p in alive:
        with contextlib.suppress(psutil.Error):
            p.kill()
    return len(alive)


def _cancel(home: Path) -> Callable[[subprocess.Popen[bytes]], bool]:
    def act(child: subprocess.Popen[bytes]) -> bool:
        with dg.DagsterInstance.from_config(str(home)) as instance:
            (run,) = instance.get_runs(limit=1)
            if run.is_finished:
                return False
            instance.report_run_canceling(run)
            return True

    return act


def _sigterm(child: subprocess.Popen[bytes]) -> bool:
    child.send_signal(signal.SIGTERM)
    return True


def _worker_pids(cluster: CliCluster, mode: str, child: subprocess.Popen[bytes]) -> list[int]:
    """The processes hosting the run's steps: the CLI cluster's workers (`address`), or
    those the run's process started (`processes: 2`)."""
    if mode == "address":
        return cluster.worker_pids()
    return [p.pid for p in _worker_processes(child)]


def _kill_worker(
    cluster: CliCluster, mode: str, rng: random.Random
) -> Callable[[subprocess.Popen[bytes]], bool]:
    def act(child: subprocess.Popen[bytes]) -> bool:
        pids = _worker_pids(cluster, mode, child)
        if not pids:
            return False
        with contextlib.suppress(ProcessLookupError):
            os.kill(rng.choice(pids), signal.SIGKILL)
            return True
        return False

    return act


def _stop_worker(
    cluster: CliCluster, mode: str, rng: random.Random
) -> Callable[[subprocess.Popen[bytes]], bool]:
    """SIGSTOP one worker process, SIGCONT it a random 1-6 s later (from a thread)."""
    stopped_for = rng.uniform(*STOP_SECONDS)

    def act(child: subprocess.Popen[bytes]) -> bool:
        pids = _worker_pids(cluster, mode, child)
        if not pids:
            return False
        pid = rng.choice(pids)
        try:
            os.kill(pid, signal.SIGSTOP)
        except ProcessLookupError:
            return False

        def resume() -> None:
            time.sleep(stopped_for)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGCONT)

        threading.Thread(target=resume, daemon=True).start()
        return True

    return act


@contextlib.contextmanager
def _work_dir() -> Iterator[str]:
    """A temporary directory for the runs' instance and markers; kept (and named) with
    `DAGLOOP_STRESS_KEEP=1`, to read a faulty run's log afterwards."""
    if os.environ.get("DAGLOOP_STRESS_KEEP") == "1":
        kept = tempfile.mkdtemp(prefix="dagloop-dask-stress-")
        print(f"  instance and markers kept in {kept}", flush=True)
        yield kept
        return
    with tempfile.TemporaryDirectory(prefix="dagloop-dask-stress-") as tmp:
        yield tmp


def run_dask_stress(counts: Counts, rng: random.Random) -> dict[str, dict[str, Any]]:
    """The Dask cases: terminations, worker kills and stops, budgets; their tallies."""
    with _work_dir() as tmp:
        home, markers = Path(tmp) / "home", Path(tmp) / "markers"
        home.mkdir()
        markers.mkdir()
        (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        os.environ[jobs.MARKERS_ENV] = str(markers)  # inherited by every worker
        runs: dict[str, list[DaskRun]] = {
            "terminations": [],
            "kills": [],
            "stops": [],
            "budgets": [],
        }
        with cli_cluster(2, tmp) as cluster:
            for i in range(counts.terminations):
                mode = MODES[i % 2]
                how = "canceling" if (i // 2) % 2 == 0 else "sigterm"
                act = _cancel(home) if how == "canceling" else _sigterm
                run = one_run(home, markers, cluster, how, mode, "dask_stress_job", act, rng)
                runs["terminations"].append(run)
                _progress(run)
                _restore(cluster)
            for i in range(counts.kills):
                mode = MODES[i % 2]
                act = _kill_worker(cluster, mode, rng)
                run = one_run(home, markers, cluster, "kill", mode, "dask_stress_job", act, rng)
                runs["kills"].append(run)
                _progress(run)
                _restore(cluster)
            for i in range(counts.stops):
                mode = MODES[i % 2]
                act = _stop_worker(cluster, mode, rng)
                run = one_run(
                    home,
                    markers,
                    cluster,
                    "stop",
                    mode,
                    "dask_stress_job",
                    act,
                    rng,
                    heartbeat_timeout_seconds=STOP_HEARTBEAT_TIMEOUT,
                )
                runs["stops"].append(run)
                _progress(run)
                time.sleep(STOP_SECONDS[1])  # the worker resumed before the next run
                _restore(cluster)
            for i in range(counts.budget_runs):
                mode = MODES[i % 2]
                run = one_run(home, markers, cluster, "budget", mode, "dask_budget_job", None, rng)
                runs["budgets"].append(run)
                _progress(run)
        os.environ.pop(jobs.MARKERS_ENV, None)
    return {
        f"Dask: terminations at a random moment ({counts.terminations})": tally(
            runs["terminations"]
        ),
        f"Dask: a worker SIGKILLed mid-run ({counts.kills})": tally(runs["kills"]),
        f"Dask: a worker stopped for {STOP_SECONDS[0]:g}-{STOP_SECONDS[1]:g} s mid-run "
        f"({counts.stops})": tally(runs["stops"]),
        f"Dask: steps over a {jobs.BUDGET_SECONDS} s budget ({counts.budget_runs} runs)": tally(
            runs["budgets"], expected_timeouts=2 * jobs.OVER_BUDGET
        ),
    }


def _restore(cluster: CliCluster) -> None:
    """After a kill: the CLI cluster's nanny restarts its worker; wait for it."""
    wait_for_worker_count(cluster, len(cluster.workers))


def _progress(run: DaskRun) -> None:
    a = run.audit
    state = (
        "no run"
        if a is None
        else f"{a.status}, double {len(a.double_terminal)}, open {len(a.open_steps)}, "
        f"after end {a.after_end}, unstarted {len(a.unstarted_terminal)}"
    )
    print(
        f"  {run.scenario:9} {run.mode:10} {run.seconds:6.1f} s{' HUNG' if run.hung else ''}: "
        f"{state}, silent re-runs {run.silent_reruns}, leftover workers {run.leftover_workers}",
        flush=True,
    )


def tally(runs: list[DaskRun], expected_timeouts: int = 0) -> dict[str, Any]:
    audits = [r.audit for r in runs if r.audit is not None]
    seconds = [r.seconds for r in runs]
    out: dict[str, Any] = {
        "runs": len(runs),
        "acted": sum(r.acted for r in runs),
        "by_mode": dict(Counter(r.mode for r in runs)),
        "hangs": sum(r.hung for r in runs),
        "runs_not_found": sum(r.audit is None for r in runs),
        "double_terminal_events": sum(len(a.double_terminal) for a in audits),
        "open_steps": sum(len(a.open_steps) for a in audits),
        "entries_after_run_end": sum(a.after_end for a in audits),
        "terminal_events_of_unstarted_steps": sum(len(a.unstarted_terminal) for a in audits),
        "silent_reruns": sum(r.silent_reruns for r in runs),
        "bodies_run_without_step_start": sum(r.marker_steps_without_start for r in runs),
        "leftover_worker_processes": sum(r.leftover_workers for r in runs),
        "workers_taken_as_lost": sum(r.lost_workers for r in runs),
        "steps_started": sum(a.started for a in audits),
        "steps_succeeded": sum(a.succeeded for a in audits),
        "steps_interrupted": sum(a.failures["DagsterExecutionInterruptedError"] for a in audits),
        "step_timeouts": sum(a.failures["StepTimeoutError"] for a in audits),
        "step_failures": dict(sum((a.failures for a in audits), Counter())),
        "statuses": dict(Counter(a.status for a in audits)),
        "seconds_median": round(statistics.median(seconds), 2) if seconds else None,
        "seconds_max": round(max(seconds), 2) if seconds else None,
        "runs_with_faults": [
            {
                "mode": r.mode,
                "scenario": r.scenario,
                "run_id": r.audit.run_id,
                "double_terminal": r.audit.double_terminal[:5],
                "open_steps": r.audit.open_steps[:5],
                "after_end": r.audit.after_end,
                "unstarted": r.audit.unstarted_terminal[:5],
                "silent_reruns": r.silent_reruns,
                "hung": r.hung,
            }
            for r in runs
            if r.audit is not None and (not r.audit.exact or r.silent_reruns or r.hung)
        ][:20],
    }
    if expected_timeouts:
        out["expected_step_timeouts"] = expected_timeouts * len(runs)
        out["steps_that_must_succeed_but_did_not"] = sum(
            jobs.OVER_BUDGET - r.within_budget_succeeded for r in runs
        )
    return out


def print_dask_table(cases: dict[str, dict[str, Any]]) -> None:
    rows = [
        ("runs (processes: 2 / address)", "by_mode"),
        ("terminated or killed before the run ended", "acted"),
        ("hangs", "hangs"),
        ("double terminal events", "double_terminal_events"),
        ("open steps", "open_steps"),
        ("entries after the run's end", "entries_after_run_end"),
        ("terminal events of unstarted steps", "terminal_events_of_unstarted_steps"),
        ("silent re-runs", "silent_reruns"),
        ("bodies run without a STEP_START", "bodies_run_without_step_start"),
        ("worker processes left running", "leftover_worker_processes"),
        ("workers taken as lost", "workers_taken_as_lost"),
        ("steps interrupted", "steps_interrupted"),
        ("step timeouts (expected)", "step_timeouts"),
        ("steps that had to succeed and did not", "steps_that_must_succeed_but_did_not"),
        ("run statuses", "statuses"),
        ("seconds, median / max", None),
    ]
    names = list(cases)
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, key in rows:
        values = []
        for c in cases.values():
            if key is None:
                values.append(f"{c['seconds_median']} / {c['seconds_max']}")
            elif key == "by_mode":
                m = c["by_mode"]
                values.append(f"{c['runs']} ({m.get('processes2', 0)} / {m.get('address', 0)})")
            elif key == "step_timeouts" and "expected_step_timeouts" in c:
                values.append(f"{c['step_timeouts']} ({c['expected_step_timeouts']})")
            elif key == "statuses":
                values.append(", ".join(f"{k} {v}" for k, v in sorted(c[key].items())))
            else:
                values.append(str(c.get(key, "-")))
        print(f"| {label} | " + " | ".join(values) + " |")
