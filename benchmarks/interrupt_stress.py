"""Stress of interrupt precision: hundreds of terminations and step timeouts.

Runs the jobs of `tests/dagster/jobs/interrupts.py` (sync generator ops, sync ops doing
locking work, async ops) and audits every stored event log with the tests' own
auditor (`tests/dagster/interrupt_audit.py`):

* terminations: runs marked CANCELING at a random moment in this process, and
  `dagster job execute` processes sent SIGTERM at a random moment;
* step timeouts: the six-generators-over-budget job beside steps that must succeed;
* the Dask column (`dask_stress.py`): runs with their steps on a Dask cluster, terminated
  at random moments, a worker SIGKILLed or stopped mid-run, steps over their budgets.

Prints the tables and writes `benchmarks/results/interrupt_stress.json` (the single loop)
and `benchmarks/results/interrupt_stress_dask.json` (Dask); a part run 0 times is not
written.

    python benchmarks/interrupt_stress.py [--canceling 100] [--sigterm 50] [--timeout-runs 34]
        [--dask-terminations 50] [--dask-kills 10] [--dask-budget-runs 10] [--dask-stops 10]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import dagster as dg  # noqa: E402
from dask_stress import Counts, print_dask_table, run_dask_stress  # noqa: E402
from harness.meta import git_info, machine, versions  # noqa: E402

from tests.dagster.interrupt_audit import (  # noqa: E402
    GRACE_SECONDS,
    RunAudit,
    audit_run,
    signal_cli_at_random,
    terminate_in_process,
)
from tests.dagster.jobs import interrupts as jobs  # noqa: E402

_DELIVERIES = ("sampled", "trapped", "moved")
#: A run (or process) not over within this long after its termination counts as hung.
HANG_SECONDS = GRACE_SECONDS + 60


@contextlib.contextmanager
def instance_in_home(home: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent SQLite instance in a new DAGSTER_HOME (the tests' helper needs pytest,
    which this environment does not have)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with dg.DagsterInstance.from_config(str(home)) as instance:
        yield instance


def _tally(audits: list[RunAudit], seconds: list[float], held: list[list[str]]) -> dict[str, Any]:
    return {
        "runs": len(audits),
        "hangs": sum(s > HANG_SECONDS for s in seconds),
        "double_terminal_events": sum(len(a.double_terminal) for a in audits),
        "open_steps": sum(len(a.open_steps) for a in audits),
        "entries_after_run_end": sum(a.after_end for a in audits),
        "terminal_events_of_unstarted_steps": sum(len(a.unstarted_terminal) for a in audits),
        "held_locks": sum(len(h) for h in held),
        "abandoned_steps": sum(a.abandoned for a in audits),
        "steps_started": sum(a.started for a in audits),
        "steps_interrupted": sum(a.failures["DagsterExecutionInterruptedError"] for a in audits),
        "step_timeouts": sum(a.failures["StepTimeoutError"] for a in audits),
        "interrupt_deliveries": dict(sum((a.deliveries for a in audits), Counter())),
        "statuses": {s: sum(a.status == s for a in audits) for s in {a.status for a in audits}},
        "seconds_median": round(statistics.median(seconds), 2) if seconds else None,
        "seconds_max": round(max(seconds), 2) if seconds else None,
    }


def canceling(count: int, rng: random.Random, home: Path) -> dict[str, Any]:
    audits, seconds, held = [], [], []
    with instance_in_home(home) as instance:
        for _ in range(count):
            audit, took = terminate_in_process(instance, rng)
            audits.append(audit)
            seconds.append(took)
            held.append(jobs.held_locks())
    return _tally(audits, seconds, held)


def sigterm(count: int, rng: random.Random, home: Path) -> dict[str, Any]:
    with instance_in_home(home):
        pass
    audits, seconds, held = [], [], []
    for _ in range(count):
        outcome = signal_cli_at_random(home, rng, signal.SIGTERM)
        audits.append(outcome.audit)
        seconds.append(outcome.exit_seconds)
        held.append(outcome.held_locks)
    return _tally(audits, seconds, held)


def timeouts(count: int, home: Path) -> dict[str, Any]:
    audits, seconds, held = [], [], []
    must_succeed_failed = 0
    with instance_in_home(home) as instance:
        for _ in range(count):
            started = time.monotonic()
            result = dg.execute_job(dg.reconstructable(jobs.six_over_budget_job), instance=instance)
            seconds.append(time.monotonic() - started)
            audit = audit_run(instance, result.run_id)
            audits.append(audit)
            held.append(jobs.held_locks())
            succeeded = {
                e.step_key
                for e in result.all_events
                if e.event_type == dg.DagsterEventType.STEP_SUCCESS
            }
            must_succeed_failed += len({"sleeps_two_seconds", "waits_a_second"} - succeeded)
    tally = _tally(audits, seconds, held)
    tally["expected_step_timeouts"] = 6 * count
    tally["steps_that_must_succeed_but_did_not"] = must_succeed_failed
    return tally


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--canceling", type=int, default=100)
    parser.add_argument("--sigterm", type=int, default=50)
    parser.add_argument("--timeout-runs", type=int, default=34)
    parser.add_argument("--seed", type=int, default=2026)
    parser.add_argument("--dask-terminations", type=int, default=50)
    parser.add_argument("--dask-kills", type=int, default=10)
    parser.add_argument("--dask-budget-runs", type=int, default=10)
    parser.add_argument("--dask-stops", type=int, default=10)
    parser.add_argument(
        "--out", default=str(REPO / "benchmarks" / "results" / "interrupt_stress.json")
    )
    parser.add_argument(
        "--dask-out", default=str(REPO / "benchmarks" / "results" / "interrupt_stress_dask.json")
    )
    args = parser.parse_args()

    rng = random.Random(args.seed)
    if args.canceling or args.sigterm or args.timeout_runs:
        _loop_part(args, rng)
    counts = Counts(args.dask_terminations, args.dask_kills, args.dask_budget_runs, args.dask_stops)
    if counts.terminations or counts.kills or counts.budget_runs or counts.stops:
        _dask_part(args, counts, rng)


def _dask_part(args: argparse.Namespace, counts: Counts, rng: random.Random) -> None:
    load_before = os.getloadavg()
    started = time.monotonic()
    cases = run_dask_stress(counts, rng)
    results = {
        "benchmark": "interrupt_stress_dask",
        "git": git_info(str(REPO)),
        "versions": versions(),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": round(time.monotonic() - started, 1),
        "seed": args.seed,
        "counts": vars(counts),
        "cases": cases,
    }
    Path(args.dask_out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf8")
    print_dask_table(cases)


def _loop_part(args: argparse.Namespace, rng: random.Random) -> None:
    load_before = os.getloadavg()
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="dagloop-interrupts-") as tmp:
        cases = {
            "CANCELING at a random moment": canceling(args.canceling, rng, Path(tmp) / "c"),
            "SIGTERM of the CLI at a random moment": sigterm(args.sigterm, rng, Path(tmp) / "s"),
            "six sync generators over a 0.5 s budget": timeouts(args.timeout_runs, Path(tmp) / "t"),
        }
    results = {
        "benchmark": "interrupt_stress",
        "git": git_info(str(REPO)),
        "versions": versions(),
        "machine": machine(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
        "wall_seconds": round(time.monotonic() - started, 1),
        "seed": args.seed,
        "cases": cases,
    }
    Path(args.out).write_text(json.dumps(results, indent=2) + "\n", encoding="utf8")
    _print_table(cases)


def _print_table(cases: dict[str, dict[str, Any]]) -> None:
    rows = [
        ("runs", "runs"),
        ("hangs", "hangs"),
        ("double terminal events", "double_terminal_events"),
        ("open steps", "open_steps"),
        ("entries after the run's end", "entries_after_run_end"),
        ("terminal events of unstarted steps", "terminal_events_of_unstarted_steps"),
        ("locks left held", "held_locks"),
        ("steps abandoned", "abandoned_steps"),
        ("steps interrupted", "steps_interrupted"),
        ("sync steps: sampled / trapped / moved while scheduling", "deliveries"),
        ("step timeouts", "step_timeouts"),
        ("seconds to stop, median / max", None),
    ]
    names = list(cases)
    print("| | " + " | ".join(names) + " |")
    print("|---" * (len(names) + 1) + "|")
    for label, key in rows:
        if key is None:
            values = [f"{c['seconds_median']} / {c['seconds_max']}" for c in cases.values()]
        elif key == "deliveries":
            values = [
                " / ".join(str(c["interrupt_deliveries"].get(n, 0)) for n in _DELIVERIES)
                for c in cases.values()
            ]
        else:
            values = [str(c.get(key, "")) for c in cases.values()]
        print(f"| {label} | " + " | ".join(values) + " |")


if __name__ == "__main__":
    main()
