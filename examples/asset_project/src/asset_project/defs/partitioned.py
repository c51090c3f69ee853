# src/asset_project/defs/partitioned.py
import asyncio

import dagster as dg

from asset_project.defs.resources import FakeHttpClient

days = dg.DailyPartitionsDefinition(start_date="2026-01-01", end_date="2026-02-01")


@dg.asset(partitions_def=days, backfill_policy=dg.BackfillPolicy.single_run(), pool="api")
async def daily_events(
    context: dg.AssetExecutionContext, api: dg.ResourceParam[FakeHttpClient]
) -> dg.MaterializeResult:
    # One day in a normal run; every day of the range in a single-run backfill, fetched
    # concurrently. The asset stores what it fetched itself and returns no value: the
    # default IO manager cannot store one output for a range of partitions.
    days_to_fetch = context.partition_keys
    pages = await asyncio.gather(*(api.get_json(f"/events?day={d}") for d in days_to_fetch))
    await asyncio.gather(
        *(
            api.put_json(f"/warehouse/events/{day}", page)
            for day, page in zip(days_to_fetch, pages, strict=True)
        )
    )
    return dg.MaterializeResult(metadata={"days": len(days_to_fetch)})


daily_events_job = dg.define_asset_job("daily_events_job", selection=[daily_events])
