"""Fixtures for running real Dagster runs with dagloop's executor.

Jobs are run with `dg.execute_job(dg.reconstructable(job), ...)` or
`dagloop.dagster.execute_in_process(job)`: Dagster's own `job.execute_in_process()` and
`materialize()` shortcuts always use Dagster's in-process executor, whatever the job's
`executor_def` says.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.conftest import instance_in_home


@pytest.fixture(params=["ephemeral", "sqlite"])
def instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """Each test runs on an ephemeral instance and on a persistent SQLite instance."""
    if request.param == "ephemeral":
        with dg.DagsterInstance.ephemeral() as inst:
            yield inst
    else:
        yield from persistent_sqlite_instance(tmp_path)


@pytest.fixture
def ephemeral_instance() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as inst:
        yield inst


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    yield from persistent_sqlite_instance(tmp_path)


def persistent_sqlite_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent SQLite instance in a fresh DAGSTER_HOME under `tmp_path`."""
    with instance_in_home(tmp_path / "dagster_home", "") as inst:
        yield inst


@dataclass
class RunOutcome:
    success: bool
    run_id: str
    events: list[dg.DagsterEvent]
    outputs: dict[str, Any]
    status: dg.DagsterRunStatus

    def of_type(self, event_type: dg.DagsterEventType) -> list[dg.DagsterEvent]:
        return [e for e in self.events if e.event_type == event_type]

    def step_keys(self, event_type: dg.DagsterEventType) -> set[str]:
        return {e.step_key for e in self.of_type(event_type) if e.step_key is not None}


class Gauge:
    """Peak concurrency of op bodies, per label (ops run in this process)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.current: dict[str, int] = {}
        self.peak: dict[str, int] = {}
        self.entered: dict[str, int] = {}

    def reset(self) -> None:
        self.current.clear()
        self.peak.clear()
        self.entered.clear()

    def enter(self, label: str) -> None:
        with self._lock:
            self.current[label] = self.current.get(label, 0) + 1
            self.entered[label] = self.entered.get(label, 0) + 1
            self.peak[label] = max(self.peak.get(label, 0), self.current[label])

    def leave(self, label: str) -> None:
        with self._lock:
            self.current[label] -= 1


def run_job(
    job: dg.JobDefinition | Callable[[], dg.JobDefinition],
    instance: dg.DagsterInstance,
    run_config: Mapping[str, Any] | None = None,
    outputs: tuple[str, ...] = (),
    **kwargs: Any,
) -> RunOutcome:
    """Execute `job` (a module-level job, or a module-level function building one)
    through its own executor and collect what tests look at."""
    recon = dg.reconstructable(job)
    if outputs:
        # Opening the result re-initialises resources to load outputs: only when asked.
        with dg.execute_job(recon, instance=instance, run_config=run_config, **kwargs) as result:
            values = (
                {name: result.output_for_node(name) for name in outputs} if result.success else {}
            )
    else:
        result = dg.execute_job(recon, instance=instance, run_config=run_config, **kwargs)
        values = {}
    run = instance.get_run_by_id(result.run_id)
    assert run is not None
    return RunOutcome(
        success=result.success,
        run_id=result.run_id,
        events=list(result.all_events),
        outputs=values,
        status=run.status,
    )


def assert_every_started_step_ended(instance: dg.DagsterInstance, run_id: str) -> None:
    """Every STEP_START in the event log has a terminal event for the same step."""
    records = instance.all_logs(run_id)
    started: dict[str, int] = {}
    ended: dict[str, int] = {}
    terminal = {
        dg.DagsterEventType.STEP_SUCCESS,
        dg.DagsterEventType.STEP_FAILURE,
        dg.DagsterEventType.STEP_UP_FOR_RETRY,
        dg.DagsterEventType.STEP_SKIPPED,
    }
    for record in records:
        event = record.dagster_event
        if event is None or event.step_key is None:
            continue
        if event.event_type == dg.DagsterEventType.STEP_START:
            started[event.step_key] = started.get(event.step_key, 0) + 1
        elif event.event_type in terminal:
            ended[event.step_key] = ended.get(event.step_key, 0) + 1
    missing = {key for key, count in started.items() if ended.get(key, 0) < count}
    assert not missing, f"steps started without a terminal event: {sorted(missing)}"


def dagloop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dagloop-")]
