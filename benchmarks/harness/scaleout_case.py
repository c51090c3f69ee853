"""Child process: one fan-out run for the scaleout suite, with the CPU of every process.

Usage: python -m harness.scaleout_case '<json spec>' (the spec of harness.dagster_case,
with ``exec_config`` the executor's config, e.g. ``{"dask": {"processes": 2}}``).

CPU, each over ``execute_job`` alone:

* ``cpu_run``: this process (the run process; with ``processes: K`` the Dask scheduler
  runs in it too), from ``getrusage(RUSAGE_SELF)``;
* ``cpu_children``: child processes during the run: those ended and waited for
  (``RUSAGE_CHILDREN``; spawned worker processes of ``processes: K``, whose cluster closes
  with the run) and those alive after it, with their own ended children (the forkserver
  that forks the workers, and the workers it waited for);
* ``cpu_children_each``: the same per child process, the last psutil sample of each
  (every 0.1 s, so up to 0.1 s of a worker's last CPU can be missing from it; the total
  above is exact).

The workers of a cluster given by ``address`` are not children: the parent reads their
CPU (harness/dask_cluster.py).
"""

from __future__ import annotations

import contextlib
import os
import threading
from typing import Any

import psutil

from harness.dagster_case import check_run, fanout_run
from harness.proc import case_dir, child_main, is_worker, measured, peak_rss_self_mb


class ChildCpu:
    """Samples the CPU of this process's descendants until stopped (last value per pid)."""

    def __init__(self, every: float = 0.1) -> None:
        self._every = every
        self._stop = threading.Event()
        #: Per pid: its command line, its CPU, whether it is this process's child.
        self._last: dict[int, tuple[str, float, bool]] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> ChildCpu:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        me = psutil.Process()
        while not self._stop.is_set():
            with contextlib.suppress(psutil.Error):
                for child in me.children(recursive=True):
                    with contextlib.suppress(psutil.Error):
                        t = child.cpu_times()
                        name = " ".join(child.cmdline())
                        direct = child.ppid() == me.pid
                        self._last[child.pid] = (name, t.user + t.system, direct)
            self._stop.wait(self._every)

    def each(self) -> list[float]:
        """CPU of each worker process seen (multiprocessing's spawned children, or the
        forkserver's forked ones), highest first."""
        return sorted(
            (round(cpu, 3) for name, cpu, direct in self._last.values() if is_worker(name, direct)),
            reverse=True,
        )


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    n = int(spec["n"])
    with case_dir("dagloop-bench-so-") as tmp:
        instance, recon, run_config = fanout_run(spec, tmp)
        with ChildCpu() as children:
            run = measured(lambda: dg.execute_job(recon, instance=instance, run_config=run_config))
        result = run.result
        out: dict[str, Any] = {
            "wall": round(run.wall, 4),
            "cpu_run": round(run.cpu_self, 3),
            "cpu_children": round(run.cpu_children, 3),
            "cpu_children_each": children.each(),
            "peak_rss_self_mb": round(peak_rss_self_mb(), 1),
            "pid": os.getpid(),
            **check_run(instance, result, n),
        }
        instance.dispose()
        return out


if __name__ == "__main__":
    child_main(main)
