"""Re-execution from failure that redoes exactly the steps without a stored success.

Dagster chooses the steps of a run re-executed from failure (`ReexecutionOptions.
from_failure`, the UI's "Re-execute from failure") from the parent run's event log:
steps that failed, steps that started without ending, and steps with no event at all.
That last rule works per *unresolved* step for dynamic mappings: once one mapped step
`work[3]` has an event, `work[?]` counts as seen, and the mapped steps that never
started (terminated or killed before their turn, waiting behind `max_concurrent` or a
tag limit) are left out. The re-execution then succeeds, and a `.collect()` downstream
sees fewer items than the producer yielded, without any error.

Every mapped step the parent's mappings resolve to is in the plan the executor is given
(Dagster resolves them from the parent's dynamic outputs). So dagloop's executor adds
the ones without a success (or skip) anywhere in the run's ancestry, and the steps
downstream of them, before any step starts, and says so in an engine event. A run with
a step selection of the user's own (`ReexecutionOptions(step_selection=...)`) is left
as selected.
"""

from __future__ import annotations

from collections.abc import Iterable

import dagster as dg

from dagloop.dagster._internals import (
    RESUME_RETRY_TAG,
    ExecutionPlan,
    ExecutionStep,
    KnownExecutionState,
    PlanOrchestrationContext,
    ResolvedFromDynamicStepHandle,
    ResolvedRunConfig,
)

_DONE = {dg.DagsterEventType.STEP_SUCCESS, dg.DagsterEventType.STEP_SKIPPED}


def with_unstarted_mapped_steps(
    plan_context: PlanOrchestrationContext, execution_plan: ExecutionPlan
) -> tuple[ExecutionPlan, list[str]]:
    """The plan to execute, and the step keys added to Dagster's selection (none unless
    the run re-executes another from failure and mapped steps were left out)."""
    run = plan_context.dagster_run
    selected = set(execution_plan.step_keys_to_execute)
    if not _resumes_from_failure(plan_context.instance, run, selected):
        return execution_plan, []
    steps = {
        key: step
        for key, step in execution_plan.step_dict_by_key.items()
        if isinstance(step, ExecutionStep)
    }
    done = _done_in_ancestry(plan_context.instance, run.parent_run_id)
    added = {
        key
        for key, step in steps.items()
        if isinstance(step.handle, ResolvedFromDynamicStepHandle)
        and key not in selected
        and key not in done
    }
    if not added:
        return execution_plan, []
    added |= _downstream(steps, added, skip=selected | done)
    keys = [key for key in steps if key in selected or key in added]
    keys += [key for key in execution_plan.step_keys_to_execute if key not in steps]
    job_def = plan_context.job.get_definition()
    run_config = ResolvedRunConfig.build(job_def, plan_context.run_config)
    return execution_plan.build_subset_plan(keys, job_def, run_config), sorted(added)


def _resumes_from_failure(
    instance: dg.DagsterInstance, run: dg.DagsterRun, selected: set[str]
) -> bool:
    """The UI, the CLI and GraphQL tag such a run; `execute_job(reexecution_options=
    ReexecutionOptions.from_failure(...))` does not, so its selection is compared with
    the one Dagster derives from the parent (a step selection of the user's own is left
    as it is)."""
    if run.parent_run_id is None:
        return False
    if run.tags.get(RESUME_RETRY_TAG) == "true":
        return True
    parent = instance.get_run_by_id(run.parent_run_id)
    if parent is None or parent.status not in (
        dg.DagsterRunStatus.FAILURE,
        dg.DagsterRunStatus.CANCELED,
    ):
        return False
    derived, _ = KnownExecutionState.build_resume_retry_reexecution(instance, parent)
    return set(derived) == selected


def _done_in_ancestry(instance: dg.DagsterInstance, run_id: str | None) -> set[str]:
    """Step keys that succeeded or were skipped in the run `run_id` or its ancestors."""
    done: set[str] = set()
    while run_id is not None:
        for record in instance.all_logs(run_id, of_type=_DONE):
            if record.step_key is not None:
                done.add(record.step_key)
        parent = instance.get_run_by_id(run_id)
        run_id = parent.parent_run_id if parent is not None else None
    return done


def _downstream(steps: dict[str, ExecutionStep], roots: Iterable[str], skip: set[str]) -> set[str]:
    found = set(roots)
    grew = True
    while grew:
        grew = False
        for key, step in steps.items():
            if key in found or key in skip:
                continue
            if step.get_execution_dependency_keys() & found:
                found.add(key)
                grew = True
    return found
