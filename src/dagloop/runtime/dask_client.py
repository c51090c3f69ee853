"""An asynchronous Dask client on the running loop, shared by the Dagster executor's
cluster mode and the engine's `DaskBackend`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

from dagloop._extras import require


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
            target = await stack.enter_async_context(
                distributed.LocalCluster(
                    n_workers=processes,
                    threads_per_worker=threads_per_worker,
                    processes=True,
                    asynchronous=True,
                    dashboard_address=None,
                )
            )
        yield await stack.enter_async_context(distributed.Client(target, asynchronous=True))
