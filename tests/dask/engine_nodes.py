"""Node functions the standalone-engine tests send to the cluster (imported on workers)."""

import os
import time


def worker_pid() -> int:
    return os.getpid()


def burn(seconds: float = 0.6) -> int:
    """CPU-bound: holds a core (and its process's GIL) for `seconds`."""
    end = time.process_time() + seconds
    spins = 0
    while time.process_time() < end:
        spins += 1
    return os.getpid()


def burn_span(seconds: float = 0.6) -> tuple[int, float, float]:
    """`burn`, returning its process and when it started and ended (CLOCK_MONOTONIC is
    one clock for every process of the machine)."""
    started = time.monotonic()
    pid = burn(seconds)
    return pid, started, time.monotonic()


def add(left: int, right: int) -> int:
    return left + right


def explode() -> None:
    raise ValueError("boom on a worker")


def sleepy() -> None:
    time.sleep(30)
