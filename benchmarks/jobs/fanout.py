"""The fan-out job of dagster-async-executor's quickstart, parameterised.

async producer -> N mapped async ops each sleeping S seconds -> collect.

Built by ``make_job`` so that ``dg.build_reconstructable_job("jobs.fanout", "make_job", ...)``
can rebuild it in another process (the multiprocess executor's children do): that is what
lets ``dg.execute_job`` run the job with its own executor (``execute_in_process`` would
silently use the in-process executor whatever ``executor_def`` says).

``placement_local=True`` tags the producer and the collector ``dagloop/placement: local``:
with dagloop's ``dask`` config they stay on the run's loop and only the mapped steps go to
the cluster. Other executors ignore the tag.

``prints=True``: each mapped async op also prints one line (per-step stdout capture then
has something of the op's own to capture).

``cpu_iterations > 0`` makes the CPU-bound variant (the ``dask_cpu`` suite): the mapped op
is a sync op that runs ``jobs.cpu.burn(cpu_iterations)``, pure-Python arithmetic (~40 ms for
500,000 iterations on the 2-core benchmark machine), instead of sleeping; ``sleep`` is then
unused. The amount of work is fixed by the iteration count, not by time, so every executor
does the same work.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation.
import anyio
import dagster as dg
from harness.executors import load_executor_def

from jobs.cpu import burn

PLACEMENT_LOCAL = {"dagloop/placement": "local"}


def make_job(
    executor: str,
    n: int,
    sleep: float,
    placement_local: bool = False,
    cpu_iterations: int = 0,
    prints: bool = False,
) -> dg.JobDefinition:
    edge_tags = PLACEMENT_LOCAL if placement_local else None

    @dg.op(out=dg.DynamicOut(), tags=edge_tags)
    async def create_dynamic_outputs():  # type: ignore[no-untyped-def]
        """Creates a dynamic number of outputs."""
        for i in range(n):
            yield dg.DynamicOutput(value=f"item_{i}", mapping_key=f"key_{i}")

    @dg.op
    async def process_item(context: dg.OpExecutionContext, item: str) -> str:
        """Process each item from the fan-out."""
        context.log.info(f"[{context.op_handle}] sleeping...")
        if prints:
            print(f"{item}: printed by the op")
        if sleep > 0:
            await anyio.sleep(sleep)
        context.log.info(f"[{context.op_handle}] completed")
        return item

    @dg.op(name="process_item")
    def process_item_cpu(context: dg.OpExecutionContext, item: str) -> str:
        """Process each item from the fan-out: a sync op burning a fixed amount of CPU."""
        context.log.info(f"[{context.op_handle}] computing...")
        burn(cpu_iterations)
        context.log.info(f"[{context.op_handle}] completed")
        return item

    mapped = process_item_cpu if cpu_iterations > 0 else process_item

    @dg.op(tags=edge_tags)
    async def collect_results(context: dg.OpExecutionContext, results: list) -> list:  # type: ignore[type-arg]
        """Collect all results from the fan-out."""
        context.log.info(f"[{context.op_handle}] collected {len(results)} results")
        assert len(results) == n, (len(results), n)
        return results

    @dg.job(name=f"fanout_{executor}", executor_def=load_executor_def(executor))
    def fanout_job() -> None:
        dynamic_items = create_dynamic_outputs()
        processed = dynamic_items.map(mapped)
        collect_results(processed.collect())

    return fanout_job
