"""Fixtures for running real Dagster runs with dagloop's executor.

Jobs are run with `dg.execute_job(dg.reconstructable(job), ...)` or
`dagloop.dagster.execute_in_process(job)`: Dagster's own `job.execute_in_process()` and
`materialize()` shortcuts always use Dagster's in-process executor, whatever the job's
`executor_def` says.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.conftest import instance_in_home

#: The start of the engine event dagloop's executor logs when it takes a run: how a test
#: tells that a run (or a CLI's output) went through dagloop rather than another executor.
ENGINE_MARK = "Executing steps on one asyncio event loop"


@pytest.fixture(params=["ephemeral", "sqlite"])
def instance(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """Each test runs on an ephemeral instance and on a persistent SQLite instance."""
    if request.param == "ephemeral":
        with dg.DagsterInstance.ephemeral() as inst:
            yield inst
    else:
        yield from persistent_sqlite_instance(tmp_path)


@pytest.fixture(params=["sqlite"])
def home(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    """A persistent instance whose DAGSTER_HOME (`home_dir`) a `dagster` subprocess can
    use: SQLite, or PostgreSQL with `@pytest.mark.parametrize("home", [...], indirect=True)`."""
    if request.param == "postgres":
        yield request.getfixturevalue("postgres_instance")
        return
    with instance_in_home(tmp_path / "home", "") as inst:
        yield inst


BOTH_HOMES = pytest.mark.parametrize("home", ["sqlite", "postgres"], indirect=True)


def home_dir(instance: dg.DagsterInstance) -> Path:
    """The DAGSTER_HOME of a `home` instance (set while the fixture is active)."""
    return Path(os.environ["DAGSTER_HOME"])


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

    def failure_text(self) -> str:
        """Messages and error data of every event: where init and config errors show up."""
        return "\n".join(f"{e.message} {e.event_specific_data!r}" for e in self.events)

    @property
    def ran_on_dagloop(self) -> bool:
        """The run's engine events include dagloop's executor's."""
        return any(
            ENGINE_MARK in (e.message or "") for e in self.of_type(dg.DagsterEventType.ENGINE_EVENT)
        )


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


def records(instance: dg.DagsterInstance, run_id: str) -> list[dg.EventLogEntry]:
    """Every stored entry of the run, in order."""
    return list(instance.all_logs(run_id))


def of_type(
    entries: list[dg.EventLogEntry], event_type: dg.DagsterEventType
) -> list[dg.EventLogEntry]:
    return [r for r in entries if r.dagster_event and r.dagster_event.event_type == event_type]


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll `condition` until it holds; fail the test after `timeout` s."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail("timed out waiting for the run")
        time.sleep(0.05)


def wait_for_starts(instance: dg.DagsterInstance, count: int) -> str:
    """Wait until the newest run of `instance` stored `count` STEP_STARTs; its run id."""

    def started() -> bool:
        runs = instance.get_runs(limit=1)
        return bool(runs) and (
            len(of_type(records(instance, runs[0].run_id), dg.DagsterEventType.STEP_START)) >= count
        )

    wait_until(started, timeout=120)
    return instance.get_runs(limit=1)[0].run_id


def dagloop_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("dagloop-")]
