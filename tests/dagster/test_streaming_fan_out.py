"""Streaming fan-out: each DynamicOutput starts its mapped steps once it is stored, while
the dynamic op still yields. Every edge case of docs/streaming.md, on SQLite and
PostgreSQL, with the stored event log audited (one terminal event per started step,
nothing after the run's end)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster.conftest import RunOutcome, run_job
from tests.dagster.interrupt_stress import audit_run, cancel_when, launch_cli, sigkill_when
from tests.dagster.jobs import streaming as jobs

E = dg.DagsterEventType
STORAGES = pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)
TERMINAL = {E.STEP_SUCCESS, E.STEP_FAILURE, E.STEP_UP_FOR_RETRY, E.STEP_SKIPPED}


@pytest.fixture(autouse=True)
def reset_job_state() -> Iterator[None]:
    jobs.MAPPED_STARTED.clear()
    yield


def _timeline(instance: dg.DagsterInstance, run_id: str) -> dict[str, tuple[float, float]]:
    """(first start, last terminal event) of every step that started."""
    starts: dict[str, float] = {}
    ends: dict[str, float] = {}
    for record in instance.all_logs(run_id):
        key, kind = record.step_key, record.dagster_event_type
        if key is None:
            continue
        if kind in (E.STEP_START, E.STEP_RESTARTED):
            starts.setdefault(key, record.timestamp)
        elif kind in TERMINAL:
            ends[key] = record.timestamp
    return {key: (start, ends.get(key, float("inf"))) for key, start in starts.items()}


def _most_at_once(intervals: list[tuple[float, float]]) -> int:
    points = sorted([(s, 1) for s, _ in intervals] + [(e, -1) for _, e in intervals])
    most = current = 0
    for _, change in points:
        current += change
        most = max(most, current)
    return most


def _mapped(timeline: dict[str, tuple[float, float]], op: str) -> dict[str, tuple[float, float]]:
    return {key: span for key, span in timeline.items() if key.startswith(f"{op}[")}


def _exact(instance: dg.DagsterInstance, outcome: RunOutcome) -> None:
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit


def _resolved_ahead(outcome: RunOutcome) -> int:
    notes = [e for e in outcome.events if "resolved as their DynamicOutput" in (e.message or "")]
    if not notes:
        return 0
    (note,) = notes
    return int(note.engine_event_data.metadata["resolved_ahead"].value)


# -- the feature -------------------------------------------------------------------------


def _streamed_run(
    instance: dg.DagsterInstance, job: dg.JobDefinition, producer: str
) -> tuple[dict[str, tuple[float, float]], float]:
    """Runs a job of `producer` -> mapped -> count; checks that most mapped steps started
    while the producer still ran and that the run is exact. Returns (mapped spans, the
    producer's end)."""
    outcome = run_job(job, instance, outputs=("count",))
    assert outcome.success and outcome.outputs["count"] == jobs.ITEMS
    timeline = _timeline(instance, outcome.run_id)
    producer_end = timeline[producer][1]
    mapped = _mapped(timeline, "mapped")
    assert len(mapped) == jobs.ITEMS
    assert sum(start < producer_end for start, _ in mapped.values()) >= jobs.ITEMS // 2
    # .collect() waits for the producer.
    assert timeline["count"][0] >= producer_end
    assert _resolved_ahead(outcome) == jobs.ITEMS
    _exact(instance, outcome)
    return mapped, producer_end


@STORAGES
def test_mapped_steps_start_while_the_producer_still_yields(
    storage_instance: dg.DagsterInstance,
) -> None:
    mapped, _ = _streamed_run(storage_instance, jobs.streaming_job, "slow_producer")
    # The tag limit of 3 holds for streamed steps.
    assert _most_at_once(list(mapped.values())) <= 3


@STORAGES
def test_a_producer_that_never_awaits_still_streams(storage_instance: dg.DagsterInstance) -> None:
    """An async generator op that never awaits would hold the loop from its first output
    to its last; after a streamed output it lets the scheduler start the mapped steps."""
    _streamed_run(storage_instance, jobs.busy_producer_job, "busy_producer")


def test_without_streaming_mapped_steps_wait_for_the_producer(
    sqlite_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.not_streaming_job, sqlite_instance, outputs=("count",))
    assert outcome.success and outcome.outputs["count"] == jobs.ITEMS
    timeline = _timeline(sqlite_instance, outcome.run_id)
    producer_end = timeline["slow_producer"][1]
    assert all(start >= producer_end for start, _ in _mapped(timeline, "mapped").values())
    assert _resolved_ahead(outcome) == 0


def test_the_op_tag_streams_one_producer_only(sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.tag_streaming_job, sqlite_instance)
    assert outcome.success
    timeline = _timeline(sqlite_instance, outcome.run_id)
    tagged_end = timeline["tagged_producer"][1]
    untagged_end = timeline["untagged_producer"][1]
    assert any(start < tagged_end for start, _ in _mapped(timeline, "mapped").values())
    assert all(start >= untagged_end for start, _ in _mapped(timeline, "mapped_b").values())
    # max_concurrent: 4 holds across everything.
    assert _most_at_once(list(timeline.values())) <= 4
    _exact(sqlite_instance, outcome)


def test_a_bad_stream_tag_fails_the_run_before_any_step(
    ephemeral_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.badly_tagged_job, ephemeral_instance)
    assert not outcome.success and outcome.of_type(E.STEP_START) == []
    (failure,) = outcome.of_type(E.RUN_FAILURE)
    text = str(failure.event_specific_data.error)
    assert "Op 'badly_tagged_producer'" in text and "dagloop/stream_dynamic_outputs" in text
    assert failure.event_specific_data.error.cls_name == "ExecutorConfigError"


# -- edge cases ----------------------------------------------------------------------------


@STORAGES
def test_a_producer_failing_after_some_outputs(storage_instance: dg.DagsterInstance) -> None:
    """The mapped steps of the outputs stored before the failure run; what depends on
    the producer as a whole does not."""
    outcome = run_job(jobs.producer_fails_job, storage_instance)
    assert not outcome.success
    assert outcome.step_keys(E.STEP_FAILURE) == {"fails_midway"}
    assert outcome.step_keys(E.STEP_SUCCESS) == {f"mapped[{i}]" for i in range(4)}
    assert "after_producer" not in outcome.step_keys(E.STEP_START)
    _exact(storage_instance, outcome)


@STORAGES
@pytest.mark.parametrize(
    ("first", "second", "mapped_runs", "collected"),
    [
        (["a", "b", "c"], ["a", "b", "c"], ["a", "b", "c"], 3),  # the same keys
        (["a", "b", "c"], ["a", "b"], ["a", "b", "c"], 2),  # fewer
        (["a", "b"], ["c", "d"], ["a", "b", "c", "d"], 2),  # different
    ],
    ids=["same", "fewer", "different"],
)
def test_a_retried_producer(
    storage_instance: dg.DagsterInstance,
    first: list[str],
    second: list[str],
    mapped_runs: list[str],
    collected: int,
) -> None:
    """A mapped step runs once for each key any attempt stored; `.collect()` gathers the
    keys of the attempt that succeeded."""
    config = {"ops": {"retried_producer": {"config": {"first": first, "second": second}}}}
    outcome = run_job(
        jobs.retried_producer_job, storage_instance, run_config=config, outputs=("count",)
    )
    assert outcome.success and outcome.outputs["count"] == collected
    starts = [e.step_key for e in outcome.of_type(E.STEP_START) if e.step_key != "count"]
    mapped_starts = sorted(k for k in starts if k.startswith("mapped["))
    assert mapped_starts == [f"mapped[{key}]" for key in mapped_runs]
    _exact(storage_instance, outcome)


@STORAGES
def test_termination_mid_stream_then_reexecution_from_failure(
    storage_instance: dg.DagsterInstance,
) -> None:
    instance = storage_instance
    cancel_when(instance, jobs.MAPPED_STARTED, 0.3)
    parent = run_job(jobs.streaming_job, instance)
    assert parent.status == dg.DagsterRunStatus.CANCELED
    _exact(instance, parent)

    options = dg.ReexecutionOptions.from_failure(parent.run_id, instance)
    child = run_job(jobs.streaming_job, instance, reexecution_options=options, outputs=("count",))
    assert child.success and child.outputs["count"] == jobs.ITEMS
    _exact(instance, child)


@STORAGES
def test_reexecution_from_failure_and_of_a_subset(storage_instance: dg.DagsterInstance) -> None:
    instance = storage_instance
    flag = Path(instance.root_directory) / "failed_once"
    config = {"ops": {"fails_once": {"config": {"flag": str(flag)}}}}
    parent = run_job(jobs.fails_once_job, instance, run_config=config)
    assert not parent.success
    assert outcome_mapped_successes(parent), "the first outputs' mapped steps ran"

    options = dg.ReexecutionOptions.from_failure(parent.run_id, instance)
    child = run_job(jobs.fails_once_job, instance, reexecution_options=options, outputs=("count",))
    assert child.success and child.outputs["count"] == jobs.ITEMS
    _exact(instance, child)

    subset = dg.ReexecutionOptions(parent_run_id=child.run_id, step_selection=["mapped[3]"])
    one = run_job(jobs.fails_once_job, instance, reexecution_options=subset)
    assert one.success and one.step_keys(E.STEP_SUCCESS) == {"mapped[3]"}


def outcome_mapped_successes(outcome: RunOutcome) -> set[str]:
    return {k for k in outcome.step_keys(E.STEP_SUCCESS) if k.startswith("mapped[")}


@STORAGES
def test_two_dynamic_outputs_of_one_op_stream_each(storage_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.two_outputs_job, storage_instance, outputs=("count_left", "count_right"))
    assert outcome.success
    assert outcome.outputs == {"count_left": 3, "count_right": 3}
    timeline = _timeline(storage_instance, outcome.run_id)
    producer_end = timeline["two_outputs"][1]
    assert min(start for start, _ in _mapped(timeline, "mapped").values()) < producer_end
    assert min(start for start, _ in _mapped(timeline, "mapped_b").values()) < producer_end
    _exact(storage_instance, outcome)


@STORAGES
def test_an_empty_and_a_skipped_optional_dynamic_output(
    storage_instance: dg.DagsterInstance,
) -> None:
    outcome = run_job(jobs.empty_outputs_job, storage_instance, outputs=("count_empty",))
    assert outcome.success and outcome.outputs["count_empty"] == 0
    assert "count_skipped" in outcome.step_keys(E.STEP_SKIPPED)
    assert not [k for k in outcome.step_keys(E.STEP_START) if "[" in k]
    _exact(storage_instance, outcome)


@STORAGES
def test_chained_maps_stream_together(storage_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.chained_maps_job, storage_instance, outputs=("count",))
    assert outcome.success and outcome.outputs["count"] == jobs.ITEMS
    timeline = _timeline(storage_instance, outcome.run_id)
    producer_end = timeline["slow_producer"][1]
    assert min(start for start, _ in _mapped(timeline, "then").values()) < producer_end
    _exact(storage_instance, outcome)


@STORAGES
def test_a_mapped_op_that_is_itself_a_dynamic_op(storage_instance: dg.DagsterInstance) -> None:
    outcome = run_job(jobs.mapped_dynamic_op_job, storage_instance)
    assert outcome.success
    timeline = _timeline(storage_instance, outcome.run_id)
    producer_end = timeline["slow_producer"][1]
    inner = _mapped(timeline, "inner_dynamic")
    assert len(inner) == jobs.ITEMS
    assert min(start for start, _ in inner.values()) < producer_end
    _exact(storage_instance, outcome)


def test_nested_map_is_rejected_by_dagster_itself() -> None:
    """`.map` inside a `.map` is not a Dagster graph (an op downstream of two dynamic
    outputs): it fails at definition, streaming or not."""
    with pytest.raises(dg.DagsterInvalidDefinitionError, match="more than one dynamic output"):

        @dg.job
        def nested() -> None:
            jobs.slow_producer().map(lambda item: jobs.inner_dynamic(item).map(jobs.mapped))


@STORAGES
def test_sigkill_mid_stream_then_reexecution_from_failure(
    storage_instance: dg.DagsterInstance,
) -> None:
    instance = storage_instance
    home = Path(instance.root_directory)
    process = launch_cli(home, "tests.dagster.jobs.streaming", "streaming_job")

    def some_mapped_step_succeeded(run_id: str) -> bool:
        records = instance.all_logs(run_id, of_type=E.STEP_SUCCESS)
        return any(r.step_key and r.step_key.startswith("mapped[") for r in records)

    parent = sigkill_when(instance, process, some_mapped_step_succeeded)

    options = dg.ReexecutionOptions.from_failure(parent.run_id, instance)
    child = run_job(jobs.streaming_job, instance, reexecution_options=options, outputs=("count",))
    assert child.success and child.outputs["count"] == jobs.ITEMS
    _exact(instance, child)


def test_streamed_outputs_in_quick_succession_share_a_scheduling_round() -> None:
    """A producer yielding many outputs at once gets one streaming round at once and one
    more at the end of the interval, not a round per output; a scheduling round for
    another reason (a step ending) in between does not take the streaming round early."""
    from dagloop.dagster.streaming import STREAM_ROUND_SECONDS, StreamRounds

    async def main() -> tuple[list[bool], list[float], list[bool]]:
        loop = asyncio.get_running_loop()
        taken: list[float] = []
        early: list[bool] = []

        def scheduling_round() -> None:
            if rounds.take():
                taken.append(loop.time())

        rounds = StreamRounds(loop, lambda: loop.call_soon(scheduling_round))
        due = []
        for _ in range(100):
            due.append(rounds.output_ready())
            await asyncio.sleep(0)  # the loop goes round between outputs
            early.append(rounds.take())  # as a step ending would wake the scheduler
        await asyncio.sleep(STREAM_ROUND_SECONDS * 3)
        rounds.close()
        return due, taken, early

    due, taken, early = asyncio.run(main())
    assert due[0] and not any(due[1:])
    assert not any(early)
    assert len(taken) == 2
    assert taken[1] - taken[0] >= STREAM_ROUND_SECONDS * 0.9
