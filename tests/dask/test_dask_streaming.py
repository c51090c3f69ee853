"""Streaming fan-out on the cluster: a producer running on a worker streams its
DynamicOutputs to mapped steps on the workers while it still yields, whoever writes the
events, whether it awaits between its yields or not."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.dagster.conftest import RunOutcome, run_job
from tests.dagster.interrupt_audit import audit_run
from tests.dask import jobs

E = dg.DagsterEventType
WRITERS = pytest.mark.parametrize("writer", ["workers", "run"])
STORAGES = pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)


def _config(
    address: str, writer: str, producer: str, marker_dir: Path, **executor: Any
) -> dict[str, Any]:
    return {
        "execution": {
            "config": {"dask": {"address": address, "events_written_by": writer}, **executor}
        },
        "ops": {
            name: {"config": {"marker_dir": str(marker_dir)}}
            for name in (producer, "marks_streamed")
        },
    }


def _started_before_the_producer_ended(
    instance: dg.DagsterInstance, outcome: RunOutcome, producer: str
) -> int:
    """How many mapped steps stored their STEP_START before the producer's STEP_SUCCESS."""
    starts: list[float] = []
    producer_end = None
    for record in instance.all_logs(outcome.run_id):
        key, kind = record.step_key or "", record.dagster_event_type
        if key.startswith("marks_streamed[") and kind == E.STEP_START:
            starts.append(record.timestamp)
        elif key == producer and kind == E.STEP_SUCCESS:
            producer_end = record.timestamp
    assert producer_end is not None
    return sum(start <= producer_end for start in starts)


def _streamed(
    instance: dg.DagsterInstance, job: Any, producer: str, config: dict[str, Any]
) -> list[int]:
    """Runs the job; checks that it streamed (the producer went on only once a mapped
    step ran, and says so by succeeding), that every item was collected once from the
    workers, and that the stored log is exact. Returns the collected items."""
    outcome = run_job(job, instance, config, outputs=("count_streamed",))
    assert outcome.success, [e.message for e in outcome.events if e.is_failure]
    counted = outcome.outputs["count_streamed"]
    items = counted["items"]
    assert items == list(range(len(items)))
    mapped = outcome.step_keys(E.STEP_SUCCESS) - {producer, "count_streamed"}
    assert mapped == {f"marks_streamed[{i}]" for i in items}
    assert _started_before_the_producer_ended(instance, outcome, producer) >= 1
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit
    return items


@STORAGES
@WRITERS
def test_a_producer_on_the_cluster_streams_to_mapped_steps_there(
    writer: str, address: str, storage_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Streaming by the executor's `step_dependency_config`; the collect step runs on
    the cluster too, on a worker whose plan resolved mapped steps ahead."""
    config = _config(
        address,
        writer,
        "awaiting_producer",
        tmp_path,
        step_dependency_config={"require_upstream_step_success": False},
    )
    items = _streamed(storage_instance, jobs.awaiting_stream, "awaiting_producer", config)
    assert len(items) == jobs.STREAM_ITEMS


@WRITERS
def test_a_producer_that_never_awaits_streams_from_its_worker(
    writer: str, address: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """Streaming by the op's tag; the producer holds its worker's loop but for the turns
    it is given after its outputs, which carry them to the run process."""
    config = _config(address, writer, "busy_producer", tmp_path)
    items = _streamed(sqlite_instance, jobs.busy_stream, "busy_producer", config)
    assert len(items) >= 1
