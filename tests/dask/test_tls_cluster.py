"""A cluster whose nodes require TLS: the run's channels to its workers use TLS too,
with the cluster's own credentials (the run process's from Dask's configuration, as
its Dask client reads them; each worker's from its own `Security`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest
from distributed import LocalCluster
from distributed.security import Security

import dask
from tests.dagster.conftest import run_job
from tests.dagster.interrupt_audit import audit_run
from tests.dask import jobs


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, dict[str, Any]]]:
    """A cluster of 2 worker processes requiring TLS everywhere, and the Dask
    configuration a client of it needs (its credentials, as files)."""
    security = Security.temporary()  # one self-signed CA and certificate for every role
    assert security.require_encryption
    folder = tmp_path_factory.mktemp("tls")
    files = {}
    for name, pem in [
        ("ca", security.tls_ca_file),
        ("cert", security.tls_client_cert),
        ("key", security.tls_client_key),
    ]:
        files[name] = folder / f"{name}.pem"
        files[name].write_text(pem)
    client_config = {
        "distributed.comm.require-encryption": True,
        "distributed.comm.tls.ca-file": str(files["ca"]),
        "distributed.comm.tls.client.cert": str(files["cert"]),
        "distributed.comm.tls.client.key": str(files["key"]),
    }
    with LocalCluster(
        n_workers=2,
        threads_per_worker=8,
        processes=True,
        protocol="tls://",
        security=security,
        dashboard_address=None,
    ) as cluster:
        yield str(cluster.scheduler_address), client_config


def test_a_run_on_a_cluster_that_requires_tls_talks_to_its_workers_over_tls(
    tls_cluster: tuple[str, dict[str, Any]], sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    address, client_config = tls_cluster
    assert address.startswith("tls://")
    config = {"execution": {"config": {"dask": {"address": address}}}}
    # The workers require encryption: a channel over plain TCP would be refused, and
    # no step could run there.
    with dask.config.set(client_config):
        outcome = run_job(jobs.fanout, sqlite_instance, config, outputs=("collect",))
    assert outcome.success
    (ready,) = [e.message or "" for e in outcome.events if "cluster is ready" in (e.message or "")]
    assert "(their channels to tls://" in ready, ready
    collected = outcome.outputs["collect"]
    assert collected["values"] == list(range(1, jobs.WIDTH + 1))
    assert os.getpid() not in collected["pids"]  # the mapped steps ran on workers
    audit = audit_run(sqlite_instance, outcome.run_id)
    assert audit.exact, audit
