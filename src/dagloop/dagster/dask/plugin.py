"""The run's session on every worker of the cluster, including the workers that join it
while the run goes on: a nanny's replacement for a worker that died, a cluster scaled
up. Imported only where `distributed` is (it is an extra)."""

from __future__ import annotations

from typing import Any

from distributed.diagnostics.plugin import WorkerPlugin

from dagloop.dagster.dask.run_spec import RunSpec
from dagloop.dagster.dask.worker import open_session


class RunSessions(WorkerPlugin):
    """Registered on the cluster for the run's duration (Dask runs `setup` on each
    worker there is, and on each worker that joins): opens the run's session there."""

    def __init__(self, spec: RunSpec, run_address: str, slots: int | None) -> None:
        self.spec = spec
        self.run_address = run_address
        self.slots = slots

    async def setup(self, worker: Any) -> None:
        await open_session(self.spec, self.run_address, self.slots, worker)
