"""A worker's own copy of the run's plan: the context Dagster opens for it
(`plan_context`), and the steps the session is sent, found there as the run process's
`ActiveExecution` resolved them.

The session builds the run's plan once. A mapped step (`work[k]`) or a collect step
exists there, executable, only once the plan is resolved with its producer's mapping:
the run process sends the mappings, each time they grew, before the steps that need
them. A step of a streaming producer is sent before its producer has finished, so before
the mapping that holds it: it is resolved on its own, from its key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dagster as dg

from dagloop.dagster._internals import (
    ExecutionPlan,
    ExecutionStep,
    PlanExecutionContextManager,
    create_execution_plan,
    resolve_step_ahead,
)
from dagloop.dagster.dask.run_spec import RunSpec

Mappings = Mapping[str, Mapping[str, Sequence[str] | None]]


class WorkerPlan:
    def __init__(self, plan: ExecutionPlan) -> None:
        self._plan = plan
        self._mappings: Mappings = {}
        #: The plan has not been resolved with the last mappings received.
        self._unresolved = False

    def mappings_received(self, mappings: Mappings) -> None:
        self._mappings = mappings
        self._unresolved = True

    def step(self, key: str) -> ExecutionStep:
        """The executable step `key`. A collect step is in the plan before it is
        resolved, under its own key: what counts is whether the step is executable."""
        plan = self._plan
        if not isinstance(plan.step_dict_by_key.get(key), ExecutionStep):
            if self._unresolved:
                # Once per change of the mappings: resolving scans the whole plan.
                plan.resolve(self._mappings)
                self._unresolved = False
            if key not in plan.step_dict_by_key:
                resolve_step_ahead(plan, key)
        return plan.get_executable_step_by_key(key)


def plan_context(spec: RunSpec, instance: dg.DagsterInstance) -> PlanExecutionContextManager:
    """Dagster's context for the run's plan in a worker, as a multiprocess child opens
    it; the session takes its steps from that plan (`WorkerPlan`)."""
    # The plan the orchestrator runs (same steps, same starting state), so that each
    # step's context resolves inputs, IO managers and versions as it would there.
    plan = create_execution_plan(
        job=spec.recon_job,
        run_config=spec.run_config,
        step_keys_to_execute=spec.step_keys_to_execute,
        known_state=spec.known_state,
        repository_load_data=spec.repository_load_data,
    )
    return PlanExecutionContextManager(
        job=spec.recon_job.with_repository_load_data(plan.repository_load_data),
        execution_plan=plan,
        run_config=spec.run_config,
        dagster_run=spec.dagster_run,
        instance=instance,
        retry_mode=spec.retry_mode.for_inner_plan(),
        step_dependency_config=spec.step_dependency_config,
    )
