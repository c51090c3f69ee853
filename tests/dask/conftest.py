"""A real two-worker Dask cluster (worker processes), shared by the tests of this folder,
and persistent SQLite instances (steps on workers write to the run's event log)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest
from distributed import LocalCluster

from tests.dagster.conftest import persistent_sqlite_instance
from tests.dask.cli_cluster import CliCluster, cli_cluster

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def cluster() -> Iterator[LocalCluster]:
    # Worker processes load the test jobs by file; they import `tests.*` from the repo.
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (str(REPO), os.environ.get("PYTHONPATH")) if p
    )
    with LocalCluster(
        n_workers=2,
        threads_per_worker=32,
        processes=True,
        dashboard_address=None,
    ) as local:
        yield local


@pytest.fixture
def address(cluster: LocalCluster) -> str:
    return str(cluster.scheduler_address)


@pytest.fixture
def sqlite_instance(tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    yield from persistent_sqlite_instance(tmp_path)


@pytest.fixture(scope="module")
def dask_cli_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CliCluster]:
    """A cluster started with `dask scheduler` and `dask worker` (tests/dask/cli_cluster.py)."""
    yield from cli_cluster(tmp_path_factory.mktemp("dask_cli_cluster"))
