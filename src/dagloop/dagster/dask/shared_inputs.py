"""What every step task of a run reads, put on the workers once: the run's spec, and the
run's dynamic mappings each time they grow (they are O(steps); sent with every step they
would make a fan-out's submissions quadratic)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from typing import Any

Mappings = Mapping[str, Mapping[str, Sequence[str] | None]]


class SharedInputs:
    """Dask futures of data already on every worker (on the run's loop)."""

    def __init__(self, client: Any, spec_value: Any, spec: Any) -> None:
        self._client = client
        self._spec_value = spec_value
        #: The run's spec on the workers (a Dask future).
        self.spec = spec
        self._mappings: tuple[int, asyncio.Future[Any]] | None = None

    @classmethod
    async def send(cls, client: Any, spec_value: Any) -> SharedInputs:
        return cls(client, spec_value, await _broadcast(client, spec_value))

    async def mappings(self, mappings: Mappings) -> Any:
        """The mappings' future, sent again only when they grew."""
        size = sum(len(keys or ()) for outputs in mappings.values() for keys in outputs.values())
        if self._mappings is None or self._mappings[0] != size:
            sent = asyncio.ensure_future(_broadcast(self._client, dict(mappings)))
            self._mappings = (size, sent)
        return await self._mappings[1]

    async def send_lost(self, mappings: Mappings) -> Any:
        """Send again what was lost with the workers that held it (a future no longer
        finished); the mappings' future to submit with."""
        if self.spec.status != "finished":
            self.spec = await _broadcast(self._client, self._spec_value)
        sent = self._mappings[1] if self._mappings is not None else None
        if sent is not None and sent.done() and sent.result().status != "finished":
            self._mappings = None
        return await self.mappings(mappings)


async def _broadcast(client: Any, value: Any) -> Any:
    # In a list: `scatter` would take a dict for many values by key.
    (future,) = await client.scatter([value], broadcast=True, hash=False)
    return future
