"""Issue 2, item 5: async resources are shared by every op of a run, on its loop."""

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import dagster as dg

from dagloop.dagster import async_executor
from tests.dagster.conftest import run_job

OPS = 100
LIMIT = 4


class FakeClient:
    """Stands in for an HTTP client or DB pool: bound to the loop it was opened on."""

    def __init__(self, limit: int) -> None:
        self.loop = asyncio.get_running_loop()
        self.lock = asyncio.Lock()  # binds to the running loop on first contended use
        self.semaphore = asyncio.Semaphore(limit)
        self.in_flight = 0
        self.peak = 0
        self.calls = 0
        self.closed = False

    async def get(self, item: int) -> int:
        assert asyncio.get_running_loop() is self.loop, "client used from another loop"
        async with self.semaphore:
            self.in_flight += 1
            self.peak = max(self.peak, self.in_flight)
            await asyncio.sleep(0.05)
            async with self.lock:
                self.calls += 1
            self.in_flight -= 1
        return item


class ClientResource(dg.ConfigurableResource):
    limit: int = LIMIT

    @asynccontextmanager
    async def yield_for_execution(
        self, context: dg.InitResourceContext
    ) -> AsyncIterator["FakeClient"]:
        client = FakeClient(self.limit)
        try:
            yield client  # type: ignore[misc]
        finally:
            await asyncio.sleep(0)
            client.closed = True


@dg.op(out=dg.DynamicOut(int))
def items():
    for i in range(OPS):
        yield dg.DynamicOutput(i, mapping_key=str(i))


@dg.op
async def call_api(client: ClientResource, item: int) -> dict:
    value = await client.get(item)  # type: ignore[attr-defined]
    return {"value": value, "client": id(client), "loop": id(asyncio.get_running_loop())}


@dg.op
async def report(client: ClientResource, results: list) -> dict:
    return {
        "results": results,
        "client": id(client),
        "calls": client.calls,  # type: ignore[attr-defined]
        "peak": client.peak,  # type: ignore[attr-defined]
        "client_loop": id(client.loop),  # type: ignore[attr-defined]
    }


@dg.job(executor_def=async_executor, resource_defs={"client": ClientResource()})
def shared_client_job():
    report(items().map(call_api).collect())


def test_one_async_resource_serves_100_concurrent_ops(instance: dg.DagsterInstance) -> None:
    outcome = run_job(shared_client_job, instance, outputs=("report",))
    assert outcome.success, [e.message for e in outcome.of_type(dg.DagsterEventType.STEP_FAILURE)]
    summary = outcome.outputs["report"]
    results = summary["results"]
    assert sorted(r["value"] for r in results) == list(range(OPS))
    assert {r["client"] for r in results} == {summary["client"]}, "one client object for the run"
    assert {r["loop"] for r in results} == {summary["client_loop"]}, "ops ran on the client's loop"
    assert summary["calls"] == OPS
    # The resource's semaphore limits concurrency across ops, and ops did overlap.
    assert summary["peak"] == LIMIT
