"""A Dask cluster started with Dask's own command-line tools: `dask scheduler` and two
`dask worker` processes (each under its nanny, which starts a new worker process when
one is killed), on 127.0.0.1 only. Steps reach it by `address`, as on any cluster
dagloop did not start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from distributed import Client

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
WORKERS = 2
THREADS = 32
START_SECONDS = 120


@dataclass
class CliCluster:
    address: str
    scheduler_file: Path

    def worker_pids(self) -> dict[str, int]:
        """Each worker's address and the pid of its worker process (not its nanny)."""
        with Client(scheduler_file=str(self.scheduler_file), timeout=30) as client:
            return dict(client.run(os.getpid))

    def wait_for_workers(self, count: int = WORKERS) -> None:
        with Client(scheduler_file=str(self.scheduler_file), timeout=30) as client:
            client.wait_for_workers(count, timeout=START_SECONDS)


def _start(command: list[str], log: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True
        )


def cli_cluster(tmp: Path) -> Iterator[CliCluster]:
    """Start the scheduler and the workers, wait for them, stop them (and their
    process groups) afterwards."""
    env = dict(os.environ)
    # The workers load the jobs (`tests.*`) by module path, and dagloop from this tree.
    env["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO / "src"), str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    scheduler_file = tmp / "scheduler.json"
    dask = str(BIN / "dask")
    listen = ["--host", "127.0.0.1", "--no-dashboard"]
    processes = [
        _start(
            [dask, "scheduler", *listen, "--port", "0", "--scheduler-file", str(scheduler_file)],
            tmp / "scheduler.log",
            env,
        )
    ]
    try:
        for index in range(WORKERS):
            processes.append(
                _start(
                    [
                        dask,
                        "worker",
                        "--scheduler-file",
                        str(scheduler_file),
                        *listen,
                        "--nworkers",
                        "1",
                        "--nthreads",
                        str(THREADS),
                    ],
                    tmp / f"worker-{index}.log",
                    env,
                )
            )
        with Client(scheduler_file=str(scheduler_file), timeout=START_SECONDS) as client:
            client.wait_for_workers(WORKERS, timeout=START_SECONDS)
            address = str(client.scheduler.address)
        yield CliCluster(address=address, scheduler_file=scheduler_file)
    finally:
        for process in reversed(processes):
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in reversed(processes):
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()
