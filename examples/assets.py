"""Async assets, a multi-asset and asset checks, materialised on one event loop.

    dagster job execute -f examples/assets.py -j assets_job

`Definitions(executor=async_executor)` makes dagloop's executor the default for every
job of the code location, asset jobs included. Values pass between assets through the
filesystem IO manager (pickles under the instance's storage directory).
"""

import anyio
import dagster as dg

from dagloop.dagster import async_executor


@dg.asset
async def orders(context: dg.AssetExecutionContext) -> list[dict]:
    """An async asset: e.g. paging through an HTTP API."""
    pages = []
    for page in range(3):
        await anyio.sleep(0.1)  # stand-in for `await client.get(...)`
        pages.extend({"id": page * 10 + i, "amount": (i + 1) * 5} for i in range(4))
    context.log.info(f"fetched {len(pages)} orders")
    return pages


@dg.asset
async def customers() -> list[dict]:
    """Runs concurrently with `orders` on the same event loop."""
    await anyio.sleep(0.1)
    return [{"id": i, "tier": "gold" if i % 3 == 0 else "basic"} for i in range(12)]


@dg.multi_asset(outs={"order_totals": dg.AssetOut(), "order_count": dg.AssetOut()})
async def order_stats(orders: list[dict]):
    """An async multi-asset yielding each of its assets as it is ready."""
    await anyio.sleep(0.05)
    yield dg.Output(sum(o["amount"] for o in orders), output_name="order_totals")
    yield dg.Output(len(orders), output_name="order_count")


@dg.asset
async def report(order_totals: int, order_count: int, customers: list[dict]) -> str:
    await anyio.sleep(0.05)
    gold = sum(1 for c in customers if c["tier"] == "gold")
    return f"{order_count} orders, {order_totals} total, {gold} gold customers"


@dg.asset_check(asset=orders, blocking=True)
async def orders_have_ids(orders: list[dict]) -> dg.AssetCheckResult:
    """A blocking check: if it failed, `order_stats` and `report` would not run."""
    missing = sum(1 for o in orders if "id" not in o)
    return dg.AssetCheckResult(passed=missing == 0, metadata={"missing_ids": missing})


@dg.asset_check(asset=report)
async def report_not_empty(report: str) -> dg.AssetCheckResult:
    return dg.AssetCheckResult(passed=bool(report))


assets_job = dg.define_asset_job("assets_job", selection=dg.AssetSelection.all())

defs = dg.Definitions(
    assets=[orders, customers, order_stats, report],
    asset_checks=[orders_have_ids, report_not_empty],
    jobs=[assets_job],
    resources={"io_manager": dg.FilesystemIOManager()},
    executor=async_executor,
)
