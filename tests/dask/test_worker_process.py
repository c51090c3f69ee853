"""Ending a lost local worker's process: killed, stopped or not, and waited for until it
has exited; with a pidfd (Linux) and by its pid alone (the other platforms)."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import threading

import pytest

from dagloop.dagster.dask.worker_process import WorkerProcess

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]


def _reaped_in_background(process: subprocess.Popen[bytes]) -> threading.Thread:
    """A worker's parent (its forkserver or nanny) reaps it as soon as it exits."""
    reaper = threading.Thread(target=process.wait, daemon=True)
    reaper.start()
    return reaper


@pytest.mark.parametrize(
    "pidfd",
    [
        pytest.param(
            True,
            id="pidfd",
            marks=pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux only"),
        ),
        pytest.param(False, id="pid"),
    ],
)
def test_a_stopped_process_is_killed_and_has_exited_when_end_returns(
    pidfd: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if not pidfd:
        monkeypatch.delattr(os, "pidfd_open", raising=False)
    sleeper = subprocess.Popen(SLEEPER)
    os.kill(sleeper.pid, signal.SIGSTOP)
    held = WorkerProcess(sleeper.pid)
    reaper = _reaped_in_background(sleeper)
    try:
        assert asyncio.run(held.end(timeout=10))
        reaper.join(timeout=10)
        assert sleeper.returncode == -signal.SIGKILL
    finally:
        held.close()
        if sleeper.poll() is None:
            sleeper.kill()


def test_a_process_that_exited_already_counts_as_ended() -> None:
    """Its channel closed because it died: nothing is left to kill."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    held = WorkerProcess(done.pid)
    done.wait()
    try:
        assert asyncio.run(held.end(timeout=1))
    finally:
        held.close()


@pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="Linux only")
def test_a_process_gone_before_it_was_held_is_never_signalled(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Its pid may belong to another process by the time the run ends it."""
    done = subprocess.Popen([sys.executable, "-c", "pass"])
    done.wait()  # reaped: its pid is free for any new process
    held = WorkerProcess(done.pid)
    signalled: list[int] = []
    monkeypatch.setattr(os, "kill", lambda pid, sig: signalled.append(pid))
    try:
        assert asyncio.run(held.end(timeout=1))
    finally:
        held.close()
    assert signalled == []
