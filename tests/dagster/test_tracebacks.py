"""A step's error shows the user's own frames, exactly those Dagster's in-process
executor shows: the op's or asset's function and the helpers below it that raised.

Each case runs once under Dagster's in-process executor (the reference) and once under
dagloop on each step host; the frames of this file in the stored error (every error of
its cause chain) and in the exception `raise_on_error=True` raises must be the same.
"""

from __future__ import annotations

import asyncio
import re
import traceback
from collections.abc import AsyncIterator, Callable, Iterator

import dagster as dg
import pytest

from dagloop.dagster import async_executor, execute_in_process

E = dg.DagsterEventType
HOSTS = ("greenlet", "thread")
_FRAME = re.compile(r'File "(?P<file>[^"]+)", line (?P<line>\d+), in (?P<name>\S+)')

Frame = tuple[str, int]


async def _async_helper() -> None:
    await asyncio.sleep(0)
    _raise_deep()


def _raise_deep() -> None:
    raise ValueError("raised below the op")


@dg.op
async def async_op() -> int:
    await _async_helper()
    return 1


@dg.op
def sync_op() -> int:
    _raise_deep()
    return 1


@dg.op(out=dg.Out(int))
def generator_op() -> Iterator[dg.Output[int]]:
    yield dg.Output(1)
    _raise_deep()


@dg.op(out=dg.DynamicOut(int))
async def async_generator_op() -> AsyncIterator[dg.DynamicOutput[int]]:
    yield dg.DynamicOutput(1, mapping_key="one")
    await _async_helper()


@dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
async def retried_async_op() -> int:
    await _async_helper()
    return 1


@dg.op(retry_policy=dg.RetryPolicy(max_retries=1))
def retried_sync_op() -> int:
    _raise_deep()
    return 1


@dg.asset
async def async_asset() -> int:
    await _async_helper()
    return 1


@dg.asset
def sync_asset() -> int:
    _raise_deep()
    return 1


def _op_job(op: dg.OpDefinition) -> dg.JobDefinition:
    @dg.job(name=f"{op.name}_job")
    def job() -> None:
        op()

    return job


def _asset_job(asset: dg.AssetsDefinition) -> dg.JobDefinition:
    return dg.Definitions(
        assets=[asset], jobs=[dg.define_asset_job(f"{asset.key.path[-1]}_job")]
    ).resolve_job_def(f"{asset.key.path[-1]}_job")


CASES: dict[str, Callable[[], dg.JobDefinition]] = {
    "async op": lambda: _op_job(async_op),
    "sync op": lambda: _op_job(sync_op),
    "generator op": lambda: _op_job(generator_op),
    "async generator op": lambda: _op_job(async_generator_op),
    "retried async op": lambda: _op_job(retried_async_op),
    "retried sync op": lambda: _op_job(retried_sync_op),
    "async asset": lambda: _asset_job(async_asset),
    "sync asset": lambda: _asset_job(sync_asset),
}


def _own_frames(stack: list[str]) -> list[Frame]:
    """The frames of this file in a stored stack, outermost first."""
    frames = []
    for entry in stack:
        match = _FRAME.search(entry)
        if match and match["file"] == __file__:
            frames.append((match["name"], int(match["line"])))
    return frames


def _stored_frames(error: dg.SerializableErrorInfo | None) -> list[list[Frame]]:
    """This file's frames of each error along the stored cause and context chain."""
    chain = []
    while error is not None:
        chain.append(_own_frames(error.stack))
        error = error.cause or error.context
    return chain


def _raised_frames(exc: BaseException | None) -> list[list[Frame]]:
    chain = []
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(
            [
                (frame.name, frame.lineno or 0)
                for frame in traceback.extract_tb(exc.__traceback__)
                if frame.filename == __file__ and not frame.name.startswith("test_")
            ]
        )
        exc = exc.__cause__ or exc.__context__
    return chain


def _errors(result: dg.ExecuteInProcessResult) -> dict[str, list[list[list[Frame]]]]:
    """Per event type (failure, retry): the frames of each such event's error."""
    found: dict[str, list[list[list[Frame]]]] = {}
    for event in result.all_events:
        if event.event_type == E.STEP_FAILURE:
            error = event.step_failure_data.error
        elif event.event_type == E.STEP_UP_FOR_RETRY:
            error = event.step_retry_data.error
        else:
            continue
        found.setdefault(event.event_type_value, []).append(_stored_frames(error))
    return found


def _dagloop(job: dg.JobDefinition, host: str) -> dg.JobDefinition:
    return job.with_executor_def(async_executor.configured({"step_host": host}))


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_stored_errors_show_the_same_user_frames_as_in_process(case: str, host: str) -> None:
    job = CASES[case]()
    expected = _errors(job.execute_in_process(raise_on_error=False))
    got = _errors(execute_in_process(_dagloop(job, host), raise_on_error=False))

    assert expected, "the reference run stored no step error"
    # The reference shows the helper that raised, below the op's own frame.
    deepest = expected[E.STEP_FAILURE.value][0][-1]
    assert deepest and deepest[-1][0] == "_raise_deep"
    assert got == expected


@pytest.mark.parametrize("host", HOSTS)
@pytest.mark.parametrize("case", sorted(CASES))
def test_raised_errors_show_the_same_user_frames_as_in_process(case: str, host: str) -> None:
    job = CASES[case]()
    with pytest.raises(Exception) as reference:
        job.execute_in_process(raise_on_error=True)
    with pytest.raises(Exception) as ours:
        execute_in_process(_dagloop(job, host), raise_on_error=True)

    assert type(ours.value) is type(reference.value)
    expected = _raised_frames(reference.value)
    assert any(frames and frames[-1][0] == "_raise_deep" for frames in expected)
    assert _raised_frames(ours.value) == expected
