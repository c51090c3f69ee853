"""A Dask cluster on 127.0.0.1 started with Dask's own command-line tools: one
``dask scheduler`` and ``workers`` ``dask worker`` processes (each with its nanny, as a
deployed cluster runs), for dagloop's ``dask: {address: ...}`` mode.

The scheduler and workers are this process's children, so their CPU can be read with
psutil before and after each run (``cpu_seconds``): the scheduler's and each worker's,
nanny and worker process together. ``worker_pids`` gives the processes that host steps
(the nannies' children), for the stress's worker kills.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil

from harness.proc import BENCH_DIR

#: Task slots per worker: what `processes: K` gives each worker by default
#: (`steps_per_worker`); with `address` the workers' own nthreads applies.
NTHREADS = 512


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _dask_cli() -> str:
    """The `dask` entry point of the interpreter running the benchmarks."""
    cli = Path(sys.executable).parent / "dask"
    if not cli.exists():
        raise RuntimeError(f"no `dask` command beside {sys.executable}")
    return str(cli)


def _tree_cpu(proc: psutil.Process) -> float:
    """User + system CPU of a process and its live descendants, in seconds."""
    total = 0.0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0.0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            t = p.cpu_times()
            total += t.user + t.system
    return total


@dataclass
class CliCluster:
    address: str
    scheduler: subprocess.Popen[bytes]
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU so far of the scheduler and of each worker (nanny and worker process)."""
        out = {"scheduler": _tree_cpu(psutil.Process(self.scheduler.pid))}
        for i, w in enumerate(self.workers):
            out[f"worker_{i}"] = _tree_cpu(psutil.Process(w.pid))
        return out

    def worker_pids(self) -> list[int]:
        """The processes hosting steps: each nanny's live children."""
        pids = []
        for w in self.workers:
            with contextlib.suppress(psutil.Error):
                pids += [c.pid for c in psutil.Process(w.pid).children() if _is_worker(c)]
        return pids

    def wait_for_workers(self, count: int, timeout: float = 120.0) -> None:
        from distributed import Client

        with Client(self.address, timeout=timeout) as client:
            client.wait_for_workers(count, timeout=timeout)


def _is_worker(proc: psutil.Process) -> bool:
    """A nanny's child hosting a worker (not multiprocessing's resource tracker)."""
    with contextlib.suppress(psutil.Error):
        return "resource_tracker" not in " ".join(proc.cmdline())
    return False


def _spawn(args: list[str], log: Path) -> subprocess.Popen[bytes]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in [BENCH_DIR, env.get("PYTHONPATH", "")] if p)
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    with open(log, "ab") as out:
        return subprocess.Popen(
            args,
            cwd=BENCH_DIR,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@contextlib.contextmanager
def cli_cluster(workers: int = 2, log_dir: str | None = None) -> Iterator[CliCluster]:
    """`dask scheduler` and `workers` x `dask worker` on 127.0.0.1, stopped on exit
    (also on error). Their output goes to `log_dir`/dask-*.log (default: discarded)."""
    cli = _dask_cli()
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    logs = Path(log_dir) if log_dir else Path(os.devnull)

    def log(name: str) -> Path:
        return logs / f"dask-{name}.log" if log_dir else logs

    scheduler = _spawn(
        [cli, "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
        log("scheduler"),
    )
    cluster = CliCluster(address=address, scheduler=scheduler)
    try:
        for i in range(workers):
            cluster.workers.append(
                _spawn(
                    [
                        cli,
                        "worker",
                        address,
                        "--host",
                        "127.0.0.1",
                        "--nthreads",
                        str(NTHREADS),
                        "--nworkers",
                        "1",
                        "--name",
                        f"bench-{i}",
                        "--no-dashboard",
                    ],
                    log(f"worker-{i}"),
                )
            )
        cluster.wait_for_workers(workers)
        yield cluster
    finally:
        for w in cluster.workers:
            _stop(w)
        _stop(scheduler)


def wait_for_worker_count(cluster: CliCluster, count: int, timeout: float = 60.0) -> bool:
    """After a worker kill: wait until the nannies have `count` workers again."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(cluster.worker_pids()) >= count:
            try:
                cluster.wait_for_workers(count, timeout=max(1.0, deadline - time.monotonic()))
                return True
            except Exception:
                return False
        time.sleep(0.2)
    return False
