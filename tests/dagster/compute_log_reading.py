"""Reading back a run's compute logs, as the UI does: its LOGS_CAPTURED events, and the
captures they point to through the instance's compute log manager."""

from __future__ import annotations

from collections import Counter

import dagster as dg

E = dg.DagsterEventType


def captures(instance: dg.DagsterInstance, run_id: str) -> list[tuple[list[str], list[str]]]:
    """(step keys, log key) of every LOGS_CAPTURED event of the run, in log order."""
    manager = instance.compute_log_manager
    found = []
    for record in instance.all_logs(run_id, of_type=E.LOGS_CAPTURED):
        event = record.dagster_event
        assert event is not None
        data = event.logs_captured_data
        found.append(
            (list(data.step_keys), list(manager.build_log_key_for_run(run_id, data.file_key)))
        )
    return found


def read(instance: dg.DagsterInstance, log_key: list[str]) -> tuple[str, str]:
    data = instance.compute_log_manager.get_log_data(log_key)
    return (data.stdout or b"").decode(), (data.stderr or b"").decode()


def markers(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("marker ")]


def run_and_step_captures(
    instance: dg.DagsterInstance, run_id: str
) -> tuple[list[str], dict[str, list[str]]]:
    """The run-level capture's log key, and each step's own capture's, by step key.

    The run-level capture comes first; the UI shows a step the first capture naming it,
    so with per-step capture it names none. Then one per step attempt that wrote,
    each naming its one step."""
    found = captures(instance, run_id)
    run_steps, run_key = found[0]
    assert run_steps == []
    per_step = {steps[0]: key for steps, key in found[1:] if len(steps) == 1}
    assert len(per_step) == len(found) - 1
    return run_key, per_step


def read_step_captures(
    instance: dg.DagsterInstance, per_step: dict[str, list[str]]
) -> tuple[dict[str, tuple[str, str]], Counter[str]]:
    """Each step's complete capture (stdout, stderr), and how many captures hold each
    marker line."""
    manager = instance.compute_log_manager
    texts = {}
    seen: Counter[str] = Counter()
    for step_key, log_key in per_step.items():
        assert manager.is_capture_complete(log_key), step_key
        texts[step_key] = stdout, stderr = read(instance, log_key)
        seen.update(markers(stdout) + markers(stderr))
    return texts, seen
