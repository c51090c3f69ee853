"""Changes to a run's plan while it executes: mapped steps of a dynamic output added
before their producer has finished (streaming), and the steps a run executes."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from dagloop.dagster._internals.names import (
    ActiveExecution,
    ExecutionPlan,
    ResolvedFromDynamicStepHandle,
    StepHandle,
    UnresolvedMappedExecutionStep,
)


def mapped_steps_by_dynamic_output(plan: ExecutionPlan) -> dict[tuple[str, str], list[Any]]:
    """The unresolved mapped steps (`work[?]`) the plan executes, by the step key and
    output name of the one dynamic output each maps over. Chained maps
    (`fan().map(a).map(b)`) map over the same output."""
    found: dict[tuple[str, str], list[Any]] = {}
    for handle in plan.step_handles_to_execute:
        step = plan.step_dict.get(handle)
        if isinstance(step, UnresolvedMappedExecutionStep) and len(step.resolved_by_step_keys) == 1:
            source = (step.resolved_by_step_key, step.resolved_by_output_name)
            found.setdefault(source, []).append(step)
    return found


def resolve_mapping_key_ahead(
    plan: ExecutionPlan,
    active: ActiveExecution,
    mapped_steps: Sequence[Any],
    producer_key: str,
    output_name: str,
    mapping_key: str,
) -> list[str]:
    """Resolve one mapping key of a dynamic output before its producer has finished: the
    mapped steps of that key join the plan and become pending in `ActiveExecution`,
    exactly as its own resolution does at the producer's success
    (`_update_from_resolved_dynamic_outputs`, then `_update`), one key at a time and in
    O(1) each. A step already in the plan (a key the producer yielded before) is left
    alone; the producer's own resolution later finds these steps in place and skips
    them. Their dependencies leave out the producer, so that they are ready once their
    input is stored whichever `step_dependency_config` the run uses."""
    added: list[str] = []
    for unresolved in mapped_steps:
        for step in _add_mapped_steps(plan, unresolved, producer_key, output_name, mapping_key):
            active._pending[step.key] = set(step.get_execution_dependency_keys()) - {producer_key}
            added.append(step.key)
    return added


def resolve_step_ahead(plan: ExecutionPlan, step_key: str) -> bool:
    """Add the mapped step `step_key` (`work[k]`) to a plan whose producer has not
    reported the mapping key `k` as complete: a Dask worker's copy of the run's plan,
    asked to run a step the run process resolved ahead of its producer's success
    (streaming). False when `step_key` is no step of a mapping over one dynamic output."""
    handle = StepHandle.parse_from_key(step_key)
    if not isinstance(handle, ResolvedFromDynamicStepHandle):
        return False
    unresolved = plan.step_dict.get(handle.unresolved_form)
    if not isinstance(unresolved, UnresolvedMappedExecutionStep):
        return False
    if len(unresolved.resolved_by_step_keys) != 1:
        return False
    _add_mapped_steps(
        plan,
        unresolved,
        unresolved.resolved_by_step_key,
        unresolved.resolved_by_output_name,
        handle.mapping_key,
    )
    return step_key in plan.step_dict_by_key


def _add_mapped_steps(
    plan: ExecutionPlan,
    unresolved: Any,
    producer_key: str,
    output_name: str,
    mapping_key: str,
) -> list[Any]:
    """The steps of `unresolved` for one mapping key that were not in the plan yet, now
    added to its step maps as Dagster's own resolution adds them."""
    added: list[Any] = []
    for step in unresolved.resolve({producer_key: {output_name: [mapping_key]}}):
        if step.key in plan.step_dict_by_key:
            continue
        plan.step_dict[step.handle] = step
        plan.step_dict_by_key[step.key] = step
        plan.executable_map[step.key] = step.handle
        added.append(step)
    return added


def run_with_steps_to_execute(dagster_run: Any, step_keys: Sequence[str]) -> Any:
    """A copy of `dagster_run` whose `step_keys_to_execute` is `step_keys` (steps read it
    to tell their own outputs from outputs of earlier runs)."""
    return dagster_run._replace(step_keys_to_execute=list(step_keys))
