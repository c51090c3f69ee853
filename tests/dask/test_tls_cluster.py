"""A cluster whose nodes require TLS: the run's channels to its workers use TLS too,
with the cluster's own credentials (the run process's from the executor's `dask.tls`
key, or else from Dask's configuration, as its Dask client reads them; each worker's
from its own `Security`)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
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

#: No scheduler listens there: the config is refused before the run connects.
TLS_ADDRESS = "tls://127.0.0.1:1"


@dataclass(frozen=True)
class TlsCluster:
    address: str
    #: The client's credentials, as PEM files: ca, cert, key.
    files: dict[str, Path]

    def dask_config(self) -> dict[str, Any]:
        """The Dask configuration a client of the cluster needs."""
        return {
            "distributed.comm.require-encryption": True,
            "distributed.comm.tls.ca-file": str(self.files["ca"]),
            "distributed.comm.tls.client.cert": str(self.files["cert"]),
            "distributed.comm.tls.client.key": str(self.files["key"]),
        }


@pytest.fixture(scope="module")
def tls_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TlsCluster]:
    """A cluster of 2 worker processes requiring TLS everywhere."""
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
    with LocalCluster(
        n_workers=2,
        threads_per_worker=8,
        processes=True,
        protocol="tls://",
        security=security,
        dashboard_address=None,
    ) as cluster:
        yield TlsCluster(str(cluster.scheduler_address), files)


def test_a_run_on_a_cluster_that_requires_tls_talks_to_its_workers_over_tls(
    tls_cluster: TlsCluster, sqlite_instance: dg.DagsterInstance
) -> None:
    assert tls_cluster.address.startswith("tls://")
    config = {"execution": {"config": {"dask": {"address": tls_cluster.address}}}}
    # The workers require encryption: a channel over plain TCP would be refused, and
    # no step could run there.
    with dask.config.set(tls_cluster.dask_config()):
        _check_run_over_tls(sqlite_instance, config)


def test_the_executor_config_gives_the_run_process_its_credentials(
    tls_cluster: TlsCluster, sqlite_instance: dg.DagsterInstance
) -> None:
    """No TLS in Dask's configuration: the `dask.tls` files alone reach the cluster."""
    assert not dask.config.get("distributed.comm.tls.ca-file", None)
    files = tls_cluster.files
    tls = {"ca_file": str(files["ca"]), "cert": str(files["cert"]), "key": str(files["key"])}
    config = {"execution": {"config": {"dask": {"address": tls_cluster.address, "tls": tls}}}}
    _check_run_over_tls(sqlite_instance, config)


def _check_run_over_tls(instance: dg.DagsterInstance, config: dict[str, Any]) -> None:
    outcome = run_job(jobs.fanout, instance, config, outputs=("collect",))
    assert outcome.success
    (ready,) = [e.message or "" for e in outcome.events if "cluster is ready" in (e.message or "")]
    assert "(their channels to tls://" in ready, ready
    collected = outcome.outputs["collect"]
    assert collected["values"] == list(range(1, jobs.WIDTH + 1))
    assert os.getpid() not in collected["pids"]  # the mapped steps ran on workers
    audit = audit_run(instance, outcome.run_id)
    assert audit.exact, audit


@pytest.mark.parametrize(
    ("tls", "address", "key"),
    [
        ({"ca_file": "missing-ca.pem", "cert": "CERT"}, TLS_ADDRESS, "dask.tls.ca_file"),
        ({"ca_file": "CA", "cert": "missing-cert.pem"}, TLS_ADDRESS, "dask.tls.cert"),
        ({"ca_file": "CA", "cert": "CERT", "key": "missing-key.pem"}, TLS_ADDRESS, "dask.tls.key"),
        ({"ca_file": "CA", "cert": "CERT"}, "tcp://127.0.0.1:1", "dask.tls"),
    ],
)
def test_tls_config_errors_name_the_key_before_any_step(
    tls: dict[str, str], address: str, key: str, sqlite_instance: dg.DagsterInstance, tmp_path: Path
) -> None:
    """A file that is not there, or TLS to a scheduler reached over TCP: the run fails
    before any step starts, and the error names the key."""
    for name in ("ca", "cert"):
        (tmp_path / f"{name}.pem").write_text("not read: the run stops before")
    given = {
        name: {"CA": str(tmp_path / "ca.pem"), "CERT": str(tmp_path / "cert.pem")}.get(path, path)
        for name, path in tls.items()
    }
    config = {"execution": {"config": {"dask": {"address": address, "tls": given}}}}
    outcome = run_job(jobs.fanout, sqlite_instance, config)
    assert not outcome.success
    text = outcome.failure_text()
    assert f"Invalid value for execution config key '{key}'" in text, text
    assert not outcome.of_type(dg.DagsterEventType.STEP_START)
