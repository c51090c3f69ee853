"""The CPU-bound work of the ``dask_cpu`` suite's mapped op (no imports: the harness also
times it in its own process, to record what one step costs on the machine)."""

from __future__ import annotations

import time

#: iterations of ``burn`` per mapped step: ~40 ms on the 2-core benchmark machine (AMD EPYC,
#: Python 3.12). Fixed by count, not by time, so every executor does the same work.
CPU_ITERATIONS = 500_000


def burn(iterations: int) -> int:
    """Pure-Python CPU work (holds the GIL throughout): ``iterations`` multiply-add-modulo."""
    x = 0
    for i in range(iterations):
        x = (x * 31 + i) % 1_000_003
    return x


def burn_seconds(iterations: int = CPU_ITERATIONS, rounds: int = 10) -> float:
    """The fastest of ``rounds`` timings of ``burn(iterations)`` in this process."""
    best = float("inf")
    for _ in range(rounds):
        t0 = time.perf_counter()
        burn(iterations)
        best = min(best, time.perf_counter() - t0)
    return best
