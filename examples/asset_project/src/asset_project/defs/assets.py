# src/asset_project/defs/assets.py
import asyncio

import dagster as dg

from asset_project.defs.resources import FakeHttpClient


@dg.asset(pool="api")
async def users(api: dg.ResourceParam[FakeHttpClient]) -> list[int]:
    return (await api.get_json("/users"))["items"]


@dg.asset(pool="api")
async def orders(api: dg.ResourceParam[FakeHttpClient]) -> list[int]:
    return (await api.get_json("/orders"))["items"]


@dg.asset(pool="api")
async def user_profiles(api: dg.ResourceParam[FakeHttpClient], users: list[int]) -> dict:
    # One request per user, all at once on the run's loop, through the one client.
    # `pool="api"`: with an instance limit on the pool, at most that many of the assets
    # that call the API run at once, across every run of the instance.
    pages = await asyncio.gather(*(api.get_json(f"/users/{u}") for u in users))
    return dict(zip(users, pages, strict=True))


@dg.asset
def report(user_profiles: dict, orders: list[int]) -> str:
    # A sync asset: runs in a worker thread, never on the loop.
    return f"{len(user_profiles)} users, {len(orders)} orders"


@dg.asset_check(asset=users, blocking=True)
async def users_not_empty(users: list[int]) -> dg.AssetCheckResult:
    # Blocking: if it fails, nothing downstream of `users` runs.
    return dg.AssetCheckResult(passed=bool(users), metadata={"count": len(users)})


refresh_job = dg.define_asset_job(
    "refresh_job", selection=dg.AssetSelection.assets(users, orders, user_profiles, report)
)
