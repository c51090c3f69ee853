# src/asset_project/defs/resources.py
import asyncio
import contextlib
from collections.abc import AsyncIterator

import dagster as dg


class FakeHttpClient:
    """Stands in for an async HTTP client (httpx.AsyncClient, aiohttp.ClientSession):
    opened on the run's event loop, usable by every asset of the run at once."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.loop = asyncio.get_running_loop()
        self.requests = 0
        self.stored: dict[str, dict] = {}
        self.closed = False

    async def get_json(self, path: str) -> dict:
        assert asyncio.get_running_loop() is self.loop, "used on the loop it was opened on"
        self.requests += 1
        await asyncio.sleep(0.2)  # the network
        return {"url": f"{self.base_url}{path}", "items": list(range(5))}

    async def put_json(self, path: str, payload: dict) -> None:
        await asyncio.sleep(0.05)
        self.stored[path] = payload

    async def aclose(self) -> None:
        self.closed = True


class ApiResource(dg.ConfigurableResource):
    base_url: str = "https://api.example.com"

    @contextlib.asynccontextmanager
    async def yield_for_execution(
        self, context: dg.InitResourceContext
    ) -> AsyncIterator[FakeHttpClient]:
        # Entered once per run, on the run's loop, before the first step; closed once,
        # after the last step, however the run ends.
        client = FakeHttpClient(self.base_url)  # httpx.AsyncClient(base_url=...) in real life
        try:
            yield client
        finally:
            await client.aclose()


defs = dg.Definitions(resources={"api": ApiResource()})
