"""An asynchronous Dask client on the running loop, shared by the Dagster executor's
cluster mode and the engine's `DaskBackend`."""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from typing import Any

from dagloop._extras import require
from dagloop.errors import DagloopError
from dagloop.runtime.forkserver import (
    DASK_DEFAULT_METHOD,
    preloaded_start_method,
    skip_dasks_preload,
)
from dagloop.runtime.threads import WorkerThreads

#: Dask's config key for how a local cluster's nannies start their worker processes.
METHOD_KEY = "distributed.worker.multiprocessing-method"
#: How long a local cluster gets to start, and then its worker processes to register
#: with its scheduler.
LOCAL_WORKERS_TIMEOUT_SECONDS = 60.0
#: How long a cancelled start of a local cluster is waited for, so that closing it finds
#: it whole; and how long closing it may take.
LOCAL_CLUSTER_SETTLE_SECONDS = 10.0

logger = logging.getLogger(__name__)


class LocalClusterError(DagloopError):
    """A local Dask cluster did not start (its nannies' errors are in the log)."""


@dataclass(frozen=True)
class TlsFiles:
    """A client's credentials for a cluster that requires TLS: PEM files."""

    ca_file: str
    cert: str
    #: None: the certificate's file holds the private key too.
    key: str | None = None

    def security(self, distributed: Any) -> Any:
        """Dask's `Security` for a client using these files, encryption required."""
        return distributed.Security(
            tls_ca_file=self.ca_file,
            tls_client_cert=self.cert,
            tls_client_key=self.key,
            require_encryption=True,
        )


@asynccontextmanager
async def dask_client(
    *,
    address: str | None,
    processes: int | None,
    threads_per_worker: int,
    preload: Sequence[str] = (),
    tls: TlsFiles | None = None,
) -> AsyncIterator[Any]:
    """Yield an asynchronous `distributed.Client`: connected to the scheduler at
    `address`, or to a local cluster of `processes` worker processes started here, with
    the modules `preload` names imported before the workers start (`forkserver.py`);
    `tls`: the client's credentials (else Dask's configuration gives them). On exit the
    client is closed, then the cluster it started (also when entering fails)."""
    feature = "Running steps on Dask"
    method = configured = DASK_DEFAULT_METHOD
    if processes is not None:
        # Before this process imports `distributed`: the forkserver imports it (and the
        # rest of `preload`) meanwhile. Dask's own default is read from its config once
        # `distributed` is imported; before, a value the user configured is there.
        dask = require("dask", extra="dask", feature=feature)
        configured = dask.config.get(METHOD_KEY, DASK_DEFAULT_METHOD)
        method = preloaded_start_method(configured, preload)
    # Imported in a thread of its own: that takes a few tenths of a second, and steps
    # on the caller's loop run meanwhile (the loop's default executor may be busy with
    # the caller's own work). Typed Any: `distributed` leaves its constructors
    # unannotated.
    importer = WorkerThreads(1, name="dagloop-dask-import")
    try:
        distributed: Any = await importer.run(require, "distributed", extra="dask", feature=feature)
    finally:
        importer.shutdown(wait=False)
    if method != configured:
        skip_dasks_preload()
    async with AsyncExitStack() as stack:
        target: Any = address
        if processes is not None:
            # Each Dask server samples its event loop's stack for the dashboard's profile
            # every few ms; the local cluster's scheduler and nannies share the caller's
            # loop, and it has no dashboard. The workers inherit the setting.
            settings = {"distributed.worker.profile.enabled": False, METHOD_KEY: method}
            stack.enter_context(dask.config.set(settings))
            target = distributed.LocalCluster(
                n_workers=processes,
                threads_per_worker=threads_per_worker,
                processes=True,
                asynchronous=True,
                dashboard_address=None,
                # A forked worker has the environment its server started with; a
                # spawned one, this process's as it is now. Both get the latter.
                env=dict(os.environ),
            )
            stack.push_async_callback(_closed, target)
            await _started(target, processes)
        security = None if tls is None else tls.security(distributed)
        client = distributed.Client(target, asynchronous=True, security=security)
        stack.push_async_callback(client.close)
        await client
        if processes is not None:
            # A local cluster can be up before all its workers registered (distributed
            # 2024.1 often is): steps handed out then would all land on the first worker.
            await client.wait_for_workers(processes, timeout=LOCAL_WORKERS_TIMEOUT_SECONDS)
        yield client


async def _started(cluster: Any, processes: int) -> None:
    """Until `cluster` has started. Cancelled, it still waits (a while) for the start to
    end before the cancellation goes on: Dask cannot close a cluster caught half-way
    through its start, and would leave the worker processes it had begun to start
    running."""

    async def start() -> None:
        await cluster

    starting = asyncio.ensure_future(start())
    try:
        async with asyncio.timeout(LOCAL_WORKERS_TIMEOUT_SECONDS):
            await asyncio.shield(starting)
    except TimeoutError:
        starting.cancel()
        raise LocalClusterError(
            f"a local Dask cluster of {processes} worker processes did not start within "
            f"{LOCAL_WORKERS_TIMEOUT_SECONDS:g} s; the errors of its nannies are logged above"
        ) from None
    except asyncio.CancelledError:
        await asyncio.wait([starting], timeout=LOCAL_CLUSTER_SETTLE_SECONDS)
        if starting.done() and not starting.cancelled():
            starting.exception()  # retrieved: the cancellation is what goes on
        raise


async def _closed(cluster: Any) -> None:
    """Close a local cluster, also one whose start failed or never ended: what cannot be
    closed is logged, not raised over the error that ended its use."""
    try:
        async with asyncio.timeout(LOCAL_CLUSTER_SETTLE_SECONDS):
            await cluster.close()
    except (Exception, TimeoutError) as error:
        logger.warning("closing a local Dask cluster failed: %r", error)
