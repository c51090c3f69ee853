"""The steps a worker's session is sent, found in its own copy of the run's plan as the
run process's `ActiveExecution` resolved them.

The session builds the run's plan once. A mapped step (`work[k]`) or a collect step
exists there, executable, only once the plan is resolved with its producer's mapping:
the run process sends the mappings, each time they grew, before the steps that need
them. A step of a streaming producer is sent before its producer has finished, so before
the mapping that holds it: it is resolved on its own, from its key.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from dagloop.dagster._internals import ExecutionPlan, ExecutionStep, resolve_step_ahead

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
