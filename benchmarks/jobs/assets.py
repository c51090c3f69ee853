"""The asset suite's two jobs of N async no-op steps each, built by name so that
``dg.build_reconstructable_job("jobs.assets", ...)`` can rebuild them in another process.

``make_assets_job``: N assets in layers of ``width``; each asset past the first layer
depends on three assets of the layer before (no values move: ``deps``, no inputs).
``make_ops_job``: a producer fanning out to N mapped async no-op ops and a collector.
Neither logs anything of its own nor moves a value through an IO manager's storage, so
the difference between them is Dagster's asset machinery (an asset step reads its
upstream assets' records and stores a materialization) and how the executor stores it.
"""

# No `from __future__ import annotations`: Dagster inspects annotations.
import dagster as dg
from harness.executors import load_executor_def

DEPS_PER_ASSET = 3


def make_assets_job(executor: str, n: int, width: int) -> dg.JobDefinition:
    assets = []
    for i in range(n):
        layer, index = divmod(i, width)
        deps = (
            [f"a{(layer - 1) * width + (index + k) % width}" for k in range(DEPS_PER_ASSET)]
            if layer
            else []
        )
        assets.append(_noop_asset(f"a{i}", deps))
    defs = dg.Definitions(
        assets=assets,
        jobs=[dg.define_asset_job("assets_job")],
        executor=load_executor_def(executor),
    )
    return defs.resolve_job_def("assets_job")


def _noop_asset(name: str, deps: list[str]) -> dg.AssetsDefinition:
    @dg.asset(name=name, deps=deps)
    async def noop() -> None:
        return None

    return noop


def make_ops_job(executor: str, n: int) -> dg.JobDefinition:
    @dg.op(out=dg.DynamicOut())
    async def fan_out():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield dg.DynamicOutput(i, mapping_key=f"key_{i}")

    @dg.op
    async def noop_item(item: int) -> int:
        return item

    @dg.op
    async def collect(items: list[int]) -> int:
        return len(items)

    @dg.job(
        name="ops_job",
        executor_def=load_executor_def(executor),
        resource_defs={"io_manager": dg.mem_io_manager},
    )
    def ops_job() -> None:
        collect(fan_out().map(noop_item).collect())

    return ops_job
