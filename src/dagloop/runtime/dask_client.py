"""An asynchronous Dask client on the running loop, shared by the Dagster executor's
cluster mode and the engine's `DaskBackend`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from dagloop._extras import require

#: How long the worker processes of a local cluster get to register with its scheduler.
LOCAL_WORKERS_TIMEOUT_SECONDS = 60.0


@asynccontextmanager
async def dask_client(
    *, address: str | None, processes: int | None, threads_per_worker: int
) -> AsyncIterator[Any]:
    """Yield an asynchronous `distributed.Client`: connected to the scheduler at
    `address`, or to a local cluster of `processes` worker processes started here. On
    exit the client is closed, then the cluster it started (also when entering fails)."""
    # Typed Any: `distributed` leaves its constructors unannotated.
    distributed: Any = require("distributed", extra="dask", feature="Running steps on Dask")
    async with AsyncExitStack() as stack:
        target: Any = address
        if processes is not None:
            import dask

            # Each Dask server samples its event loop's stack for the dashboard's profile
            # every few ms; the local cluster's scheduler and nannies share the caller's
            # loop, and it has no dashboard. The workers inherit the setting.
            stack.enter_context(dask.config.set({"distributed.worker.profile.enabled": False}))
            target = await stack.enter_async_context(
                distributed.LocalCluster(
                    n_workers=processes,
                    threads_per_worker=threads_per_worker,
                    processes=True,
                    asynchronous=True,
                    dashboard_address=None,
                )
            )
        client = await stack.enter_async_context(distributed.Client(target, asynchronous=True))
        if processes is not None:
            # A local cluster can be up before all its workers registered (distributed
            # 2024.1 often is): steps handed out then would all land on the first worker.
            await client.wait_for_workers(processes, timeout=LOCAL_WORKERS_TIMEOUT_SECONDS)
        yield client
