"""Calls from the run process to the cluster that nobody awaits: interrupts for the
steps on a worker (batched: one `Client.run` per worker and loop turn) and
cancellations of Dask tasks."""

from __future__ import annotations

import asyncio
from typing import Any

from dagloop.dagster.dask.worker import interrupt_steps


class WorkerCalls:
    def __init__(self, client: Any, topic: str) -> None:
        self._client = client
        self._topic = topic
        #: Interrupts waiting to be sent, by worker address.
        self._interrupts: dict[str, list[tuple[int, str]]] = {}
        self._pending: set[asyncio.Future[Any]] = set()

    def interrupt(self, worker: str, token: int, kind: str) -> None:
        """Ask `worker` to stop attempt `token` (messages.TIMEOUT / INTERRUPT); the
        interrupts of one loop turn go to each worker in one call."""
        if not self._interrupts:
            asyncio.get_running_loop().call_soon(self._flush)
        self._interrupts.setdefault(worker, []).append((token, kind))

    def in_background(self, call: Any) -> None:
        """Run `call`; its failure (a worker gone) is moot."""
        future = asyncio.ensure_future(call)
        self._pending.add(future)

        def done(future: asyncio.Future[Any]) -> None:
            self._pending.discard(future)
            if not future.cancelled():
                future.exception()

        future.add_done_callback(done)

    def cancel_all(self) -> None:
        for future in list(self._pending):
            future.cancel()

    def _flush(self) -> None:
        interrupts, self._interrupts = self._interrupts, {}
        for worker, stops in interrupts.items():
            self.in_background(
                self._client.run(interrupt_steps, self._topic, stops, workers=[worker])
            )
