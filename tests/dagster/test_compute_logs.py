"""Compute logs: each concurrent step's stdout/stderr captured on its own, through the
instance's compute log manager, under the step's own log key; the run's captured once
for the process, and ended when a signal arrives."""

from __future__ import annotations

import io
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dagster as dg
import pytest

from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.runtime import stream_proxy
from tests.dagster.compute_log_reading import (
    captures,
    markers,
    read,
    read_step_captures,
    run_and_step_captures,
)
from tests.dagster.conftest import assert_every_started_step_ended, run_job
from tests.dagster.jobs import run_capture
from tests.dagster.jobs.printing import (
    LINES,
    ending_badly_job,
    mapped_steps,
    marker,
    per_run_job,
    printing_job,
)

E = dg.DagsterEventType


def expected(name: str) -> tuple[list[str], list[str]]:
    """The step's own stdout and stderr marker lines, in the order it printed them."""
    return (
        [marker(name, line) for line in range(LINES) if line != 4],
        [marker(name, 4)],
    )


def test_every_step_has_exactly_its_own_lines(sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(printing_job, sqlite_instance)
    assert outcome.success
    run_id = outcome.run_id
    run_key, per_step = run_and_step_captures(sqlite_instance, run_id)
    mapped = mapped_steps()
    # A capture is opened when its step first writes something of its own: the spreads
    # print nothing, so they get none, and their Dagster log lines stay in the run's.
    assert set(per_step) == set(mapped) | {"gather"}
    run_out, run_err = read(sqlite_instance, run_key)
    for quiet in ("spread_async", "spread_sync"):
        assert f"{quiet} - STEP_START" in run_err
        assert f"{quiet} - STEP_SUCCESS" in run_err

    texts, seen = read_step_captures(sqlite_instance, per_step)
    for step_key, (stdout, stderr) in texts.items():
        if step_key in mapped:
            own_out, own_err = expected(mapped[step_key])
            assert markers(stdout) == own_out, step_key
            assert markers(stderr) == own_err, step_key
            # Dagster's own log lines of the step (its console logger writes to
            # sys.stderr) are the step's too, those logged before its first print
            # included, in order.
            assert f"{step_key} - STEP_START" in stderr
            assert f"{step_key} - STEP_SUCCESS" in stderr
            assert stderr.index(f"{step_key} - STEP_START") < stderr.index(
                f"{step_key} - STEP_SUCCESS"
            )
        else:
            assert markers(stdout) == markers(stderr) == []
            # Its Dagster lines before its first print reached the console through the
            # run-level capture as they happened; later ones are its capture's alone.
            assert f"{step_key} - STEP_START" in run_err
            assert f"{step_key} - STEP_SUCCESS" not in run_err
    assert "outside any mapped step" in read(sqlite_instance, per_step["gather"])[0]

    # Every line lands in exactly one capture: none in the run's.
    assert markers(run_out) == markers(run_err) == []
    all_lines = [line for n in mapped.values() for part in expected(n) for line in part]
    assert seen == dict.fromkeys(all_lines, 1)


def test_steps_ending_badly_have_their_capture_closed(sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(ending_badly_job, sqlite_instance)
    assert not outcome.success
    assert outcome.step_keys(E.STEP_FAILURE) == {
        "prints_then_fails",
        "prints_then_hangs",
        "sync_prints_then_fails",
    }
    assert_every_started_step_ended(sqlite_instance, outcome.run_id)
    manager = sqlite_instance.compute_log_manager
    per_step = {steps[0]: key for steps, key in captures(sqlite_instance, outcome.run_id) if steps}
    for step_key, name in [
        ("prints_then_fails", "fails"),
        ("prints_then_hangs", "hangs"),  # cancelled by its time budget
        ("sync_prints_then_fails", "sync_fails"),
    ]:
        log_key = per_step[step_key]
        assert manager.is_capture_complete(log_key), step_key
        stdout, stderr = read(sqlite_instance, log_key)
        assert markers(stdout) == [marker(name, 0), marker(name, 1)]
        assert f"{step_key} - STEP_FAILURE" in stderr
    assert "StepTimeoutError" in read(sqlite_instance, per_step["prints_then_hangs"])[1]


def test_per_run_keeps_one_capture(sqlite_instance: dg.DagsterInstance) -> None:
    outcome = run_job(per_run_job, sqlite_instance)
    assert outcome.success
    found = captures(sqlite_instance, outcome.run_id)
    assert [steps for steps, _ in found] == [["one"]]
    assert markers(read(sqlite_instance, found[0][1])[0]) == [marker("one", 0)]
    assert not stream_proxy.is_installed()


def test_no_op_manager_still_runs(ephemeral_instance: dg.DagsterInstance) -> None:
    # The ephemeral instance stores no compute logs: no per-step capture is opened.
    outcome = run_job(printing_job, ephemeral_instance)
    assert outcome.success
    assert [e.logs_captured_data.step_keys for e in outcome.of_type(E.LOGS_CAPTURED)] == [[]]


def test_config_key() -> None:
    config = AsyncExecutorConfig.from_config({"retries": {"enabled": {}}})
    assert config.compute_logs == "per_step"
    config = AsyncExecutorConfig.from_config(
        {"retries": {"enabled": {}}, "compute_logs": "per_run"}
    )
    assert config.compute_logs == "per_run"


# -- the run-level capture --------------------------------------------------------------


@pytest.mark.parametrize("mode", ["per_step", "per_run"])
def test_a_signal_ends_the_run_capture_and_the_run_goes_on(
    sqlite_instance: dg.DagsterInstance, mode: str
) -> None:
    # Ctrl-C in a terminal also kills the process that mirrors the run's capture to the
    # console: the capture ends at the signal, while the run's steps carry on.
    outcome = run_job(
        run_capture.signalled_job,
        sqlite_instance,
        run_config={"execution": {"config": {"compute_logs": mode}}},
    )
    assert outcome.success
    assert outcome.step_keys(E.STEP_UP_FOR_RETRY) == {"signalled"}
    seen = {
        event.step_key: event.step_output_data.metadata[run_capture.COMPLETE].value
        for event in outcome.of_type(E.STEP_OUTPUT)
    }
    assert seen == {"before_the_signal": False, "signalled": True}
    run_steps = [steps for steps, _ in captures(sqlite_instance, outcome.run_id)]
    assert run_steps[0] == ([] if mode == "per_step" else ["before_the_signal", "signalled"])
    assert not stream_proxy.is_installed()


# -- the stream proxy alone -------------------------------------------------------------


@contextmanager
def proxied() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    # In the test body: pytest puts its own sys.stdout back between fixture and test.
    out, err = io.StringIO(), io.StringIO()
    saved = sys.stdout, sys.stderr
    sys.stdout, sys.stderr = out, err
    try:
        with stream_proxy.installed():
            yield out, err
    finally:
        sys.stdout, sys.stderr = saved


def test_proxy_routes_by_context_and_falls_back() -> None:
    a_out, a_err, b_out = io.StringIO(), io.StringIO(), io.StringIO()
    route_a = stream_proxy.Route(a_out, a_err)
    route_b = stream_proxy.Route(b_out, io.StringIO())

    def in_thread() -> None:
        with stream_proxy.bound(route_b):
            print("b")

    with proxied() as (out, err):
        with stream_proxy.bound(route_a):
            print("a")
            print("a err", file=sys.stderr)
            thread = threading.Thread(target=in_thread)  # a plain thread: its own context
            thread.start()
            thread.join()
        print("outside")
        route_a.close()
        with stream_proxy.bound(route_a):
            print("after close")
    assert a_out.getvalue() == "a\n"
    assert a_err.getvalue() == "a err\n"
    assert b_out.getvalue() == "b\n"
    assert out.getvalue() == "outside\nafter close\n"
    assert err.getvalue() == ""


def test_proxy_installs_once_and_restores() -> None:
    original = sys.stdout
    with stream_proxy.installed():
        proxy = sys.stdout
        assert isinstance(proxy, stream_proxy.StreamProxy)
        with stream_proxy.installed():
            assert sys.stdout is proxy
        assert sys.stdout is proxy
    assert sys.stdout is original
    assert not stream_proxy.is_installed()
