"""Terminate runs (CANCELING, signals, SIGKILL) and audit what they stored.

Runs of `jobs/interrupts.py` at random moments are used by `test_interrupt_precision.py`
(dozens of terminations in `make test`) and by `benchmarks/interrupt_stress.py` (hundreds,
with counts in a table); the other helpers serve every test that terminates a run, and
`interrupt_summary` / `abandonment_warnings` find the executor's interrupt reports in an
event log by their event type and metadata.
"""

from __future__ import annotations

import json
import logging
import os
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import dagster as dg

from tests.dagster.jobs import interrupts as jobs

E = dg.DagsterEventType
TERMINAL = {E.STEP_SUCCESS, E.STEP_FAILURE, E.STEP_UP_FOR_RETRY}
OPENING = {E.STEP_START, E.STEP_RESTARTED}
RUN_END = {E.RUN_SUCCESS, E.RUN_FAILURE, E.RUN_CANCELED}
REPO = Path(__file__).resolve().parents[2]
#: The stress job's `termination_grace_seconds`.
GRACE_SECONDS = 3.0
#: How the executor delivered interrupts to sync steps: the metadata keys of its summary
#: engine event (`moved` counts interrupts moved while the step was being scheduled).
INTERRUPT_OUTCOMES = ("sampled", "trapped", "abandoned", "unneeded", "moved")


def _is_interrupt_summary(event: dg.DagsterEvent) -> bool:
    return (
        event.event_type == E.ENGINE_EVENT
        and event.step_key is None
        and set(INTERRUPT_OUTCOMES) <= set(event.engine_event_data.metadata)
    )


def _is_abandonment_warning(record: dg.EventLogEntry) -> bool:
    event = record.dagster_event
    return (
        event is not None
        and event.event_type == E.ENGINE_EVENT
        and event.step_key is not None
        and record.level == logging.WARNING
        and "steps_interrupted" in event.engine_event_data.metadata
    )


def interrupt_summary(records: Iterable[dg.EventLogEntry]) -> Counter[str]:
    """The counts of the executor's one summary engine event of a run that interrupted
    sync steps (`INTERRUPT_OUTCOMES`): empty when the run interrupted none."""
    summaries = [
        r.dagster_event
        for r in records
        if r.dagster_event and _is_interrupt_summary(r.dagster_event)
    ]
    assert len(summaries) <= 1, "the executor reports interrupts once per run"
    counts: Counter[str] = Counter()
    for summary in summaries:
        for name, value in summary.engine_event_data.metadata.items():
            counts[name] += int(value.value)
    return counts


def abandonment_warnings(records: Iterable[dg.EventLogEntry]) -> list[dg.EventLogEntry]:
    """The executor's warnings that it gave up on a step's thread after the grace period:
    engine events of that step, at WARNING, naming it in `steps_interrupted`."""
    return [r for r in records if _is_abandonment_warning(r)]


@dataclass
class RunAudit:
    """What one run's event log says about how its steps ended."""

    run_id: str
    status: str
    #: Step attempts with more than one terminal event.
    double_terminal: list[str] = field(default_factory=list)
    #: Step attempts that started and never ended.
    open_steps: list[str] = field(default_factory=list)
    #: Step entries stored after the run's end event (or runs that ended other than once).
    after_end: int = 0
    #: Terminal events of steps that never started (STEP_FAILURE without STEP_START).
    unstarted_terminal: list[str] = field(default_factory=list)
    #: Step failures by error class.
    failures: Counter[str] = field(default_factory=Counter)
    #: Steps abandoned after the grace period.
    abandoned: int = 0
    started: int = 0
    succeeded: int = 0
    #: How the executor delivered interrupts to sync steps (its summary engine event):
    #: sampled, trapped, abandoned, unneeded, moved (while being scheduled).
    deliveries: Counter[str] = field(default_factory=Counter)

    @property
    def exact(self) -> bool:
        return not (
            self.double_terminal or self.open_steps or self.after_end or self.unstarted_terminal
        )


def audit_run(instance: dg.DagsterInstance, run_id: str) -> RunAudit:
    run = instance.get_run_by_id(run_id)
    assert run is not None
    audit = RunAudit(run_id=run_id, status=run.status.value)
    attempt: dict[str, int] = {}
    ended: Counter[tuple[str, int]] = Counter()
    ends = 0
    records = instance.all_logs(run_id)
    audit.deliveries = interrupt_summary(records)
    audit.abandoned = len(abandonment_warnings(records))
    for record in records:
        event = record.dagster_event
        if event is None:
            continue
        if event.event_type in RUN_END:
            ends += 1
            continue
        if ends and record.step_key is not None:
            audit.after_end += 1
        key = event.step_key
        if key is None:
            continue
        if event.event_type in OPENING:
            attempt[key] = attempt.get(key, 0) + 1
            audit.started += 1
        elif event.event_type in TERMINAL:
            if key not in attempt:
                audit.unstarted_terminal.append(key)
            ended[(key, attempt.get(key, 0))] += 1
            if event.event_type == E.STEP_SUCCESS:
                audit.succeeded += 1
            if event.event_type == E.STEP_FAILURE:
                error = event.step_failure_data.error
                cause = error.cause if error and error.cause else error
                audit.failures[cause.cls_name if cause else "?"] += 1
    if ends != 1:
        audit.after_end += 1  # a run must end exactly once
    audit.double_terminal = sorted(f"{k}#{n}" for (k, n), count in ended.items() if count > 1)
    audit.open_steps = sorted(
        f"{key}#{n}"
        for key, last in attempt.items()
        for n in range(1, last + 1)
        if ended[(key, n)] == 0
    )
    return audit


def cancel_when(instance: dg.DagsterInstance, started: threading.Event, delay: float) -> None:
    """Mark the newest run CANCELING (as the UI's Terminate does) `delay` s after
    `started` is set."""

    def cancel() -> None:
        if not started.wait(120):
            return
        time.sleep(delay)
        (run,) = instance.get_runs(limit=1)
        if not run.is_finished:
            instance.report_run_canceling(run)

    threading.Thread(target=cancel, daemon=True).start()


def launch_cli(home: Path, module: str, job: str, **options: Any) -> subprocess.Popen[Any]:
    """`dagster job execute -m <module> -j <job>` in a child process on DAGSTER_HOME
    `home`; `options` go to Popen (output is discarded unless they say otherwise)."""
    env = {**os.environ, "DAGSTER_HOME": str(home), "PYTHONPATH": str(REPO)}
    env.update(options.pop("env", {}))
    options.setdefault("stdout", subprocess.DEVNULL)
    options.setdefault("stderr", subprocess.DEVNULL)
    command = [sys.executable, "-m", "dagster", "job", "execute", "-m", module, "-j", job]
    return subprocess.Popen(command, env=env, cwd=str(home), **options)


def sigkill_when(
    instance: dg.DagsterInstance,
    process: subprocess.Popen[Any],
    ready: Callable[[str], bool],
    timeout: float = 120,
) -> dg.DagsterRun:
    """SIGKILL the run's process once `ready(run_id)` holds for its run, then mark the
    run failed as run monitoring does for a dead run worker; returns the run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = instance.get_runs(limit=1)
        if runs and ready(runs[0].run_id):
            break
        time.sleep(0.05)
    os.kill(process.pid, signal.SIGKILL)
    process.wait(timeout=30)
    (run,) = instance.get_runs(limit=1)
    instance.report_run_failed(run)
    return run


def cancel_at_random(instance: dg.DagsterInstance, rng: random.Random, latest: float) -> None:
    """Mark the next run CANCELING (as the UI's Terminate does) at a random moment up to
    `latest` s after one of its steps started."""
    cancel_when(instance, jobs.STARTED, rng.uniform(0.05, latest))


def terminate_in_process(
    instance: dg.DagsterInstance, rng: random.Random, latest: float = 4.0
) -> tuple[RunAudit, float]:
    """One run of the stress job in this process, marked CANCELING at a random moment.
    Returns its audit and how long it took from the cancel request to return."""
    jobs.STARTED.clear()
    cancel_at_random(instance, rng, latest)
    started = time.monotonic()
    result = dg.execute_job(dg.reconstructable(jobs.stress_job), instance=instance)
    return audit_run(instance, result.run_id), time.monotonic() - started


@dataclass
class SignalledRun:
    audit: RunAudit
    #: Seconds from the signal to the process's exit.
    exit_seconds: float
    returncode: int
    #: False when the run had ended before the signal was sent.
    signalled: bool
    #: Locks the run's own process found held once every step had ended.
    held_locks: list[str]


def signal_cli_at_random(
    home: Path, rng: random.Random, sig: int = signal.SIGTERM, latest: float = 4.0
) -> SignalledRun:
    """`dagster job execute` of the stress job in a child process, sent `sig` at a random
    moment once a step started (a launcher terminating its run worker)."""
    report = home / "held_locks.json"
    report.unlink(missing_ok=True)
    with dg.DagsterInstance.from_config(str(home)) as instance:
        before = {run.run_id for run in instance.get_runs()}
        child = launch_cli(
            home,
            "tests.dagster.jobs.interrupts",
            "stress_job",
            env={jobs.LOCK_REPORT_ENV: str(report)},
        )
        run_id = _wait_for_a_started_step(instance, before, child)
        time.sleep(rng.uniform(0.05, latest))
        signalled = child.poll() is None
        sent = time.monotonic()
        if signalled:
            child.send_signal(sig)
        try:
            returncode = child.wait(timeout=120)
        except subprocess.TimeoutExpired:
            child.kill()
            returncode = child.wait()
        exit_seconds = time.monotonic() - sent
        if run_id is None:
            (run,) = [r for r in instance.get_runs() if r.run_id not in before]
            run_id = run.run_id
        held = json.loads(report.read_text()) if report.exists() else ["<no report>"]
        return SignalledRun(audit_run(instance, run_id), exit_seconds, returncode, signalled, held)


def _wait_for_a_started_step(
    instance: dg.DagsterInstance, before: set[str], child: subprocess.Popen[bytes]
) -> str | None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and child.poll() is None:
        runs = [run for run in instance.get_runs(limit=5) if run.run_id not in before]
        if runs:
            records = instance.get_records_for_run(runs[0].run_id, of_type=E.STEP_START, limit=1)
            if records.records:
                return runs[0].run_id
        time.sleep(0.05)
    return None
