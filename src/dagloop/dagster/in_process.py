"""`execute_in_process`: run a job definition in this process with dagloop's executor.

Dagster's `JobDefinition.execute_in_process` swaps the job's executor for its in-process
executor, which runs one step after another. This runs the same machinery (the job made
ephemeral: given resources, input values, the selection, the default IO manager in
memory; then `core_execute_in_process` on an ephemeral instance unless one is given) with
dagloop's executor put back in, so the steps run concurrently on one event loop.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    InMemoryJob,
    core_execute_in_process,
    merge_run_tags,
    type_check_and_normalize_args,
)
from dagloop.dagster.executor import async_executor


def execute_in_process(
    job: dg.JobDefinition,
    run_config: Mapping[str, Any] | dg.RunConfig | None = None,
    *,
    instance: dg.DagsterInstance | None = None,
    resources: Mapping[str, object] | None = None,
    tags: Mapping[str, str] | None = None,
    op_selection: Sequence[str] | None = None,
    asset_selection: Sequence[dg.AssetKey] | None = None,
    input_values: Mapping[str, object] | None = None,
    partition_key: str | None = None,
    run_id: str | None = None,
    raise_on_error: bool = True,
) -> dg.ExecuteInProcessResult:
    """Run `job` in this process with dagloop's executor; return Dagster's own
    `ExecuteInProcessResult` (`success`, `output_for_node`, `all_events`, ...).

    Takes what `job.execute_in_process()` takes. The job's executor is used if it is
    dagloop's (`async_executor` or `async_executor.configured(...)`), otherwise
    `async_executor` with its defaults; `run_config`'s `execution: config:` configures
    it either way. Nothing needs to be reconstructable: the job may be defined inside a
    test function. Without `instance`, the run goes to an ephemeral instance. As with
    `execute_in_process`, the default IO manager keeps outputs in memory.

    Not available here: steps on a Dask cluster (`dask:`), which need a reconstructable
    job and a persistent instance: use `dg.execute_job(dg.reconstructable(job), ...)`.
    """
    if not isinstance(job, dg.JobDefinition):
        raise TypeError(
            "dagloop.dagster.execute_in_process runs a dagster.JobDefinition, got "
            f"{type(job).__name__}: resolve an asset job with `defs.get_job_def(name)`, turn "
            "a graph into a job with `graph.to_job()`"
        )
    run_config, ops, assets, resource_defs, partition_key, input_values = (
        type_check_and_normalize_args(
            run_config=run_config,
            partition_key=partition_key,
            op_selection=op_selection,
            asset_selection=asset_selection,
            input_values=input_values,
            resources=resources,
        )
    )
    ephemeral = job.as_ephemeral_job(
        resource_defs=resource_defs,
        input_values=input_values,
        op_selection=ops,
        asset_selection=assets,
    ).with_executor_def(_dagloop_executor_of(job))
    if not run_config and ephemeral.partitioned_config and partition_key:
        run_config = ephemeral.partitioned_config.get_run_config_for_partition_key(partition_key)
    result: dg.ExecuteInProcessResult = core_execute_in_process(
        job=InMemoryJob(job_def=ephemeral),
        run_config=run_config,
        instance=instance,
        output_capturing_enabled=True,
        raise_on_error=raise_on_error,
        run_tags=merge_run_tags(job, partition_key, tags, assets, instance, run_config),
        run_id=run_id,
        asset_selection=frozenset(assets),
    )
    return result


def _dagloop_executor_of(job: dg.JobDefinition) -> dg.ExecutorDefinition:
    """The job's executor if it is dagloop's (configured or not), else `async_executor`."""
    executor_def = job.executor_def
    if executor_def.executor_creation_fn is async_executor.executor_creation_fn:
        return executor_def
    return async_executor
