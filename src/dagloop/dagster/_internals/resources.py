"""One resources object per set of resource keys, shared by a run's step contexts."""

from __future__ import annotations

from typing import Any

from dagloop.dagster._internals.names import (
    IAttachDifferentObjectToOpContext,
    PlanExecutionContext,
    ScopedResourcesBuilder,
)


class _SharedScopedResources(ScopedResourcesBuilder):
    """Builds each set of resources once per run: Dagster's `build` makes a new namedtuple
    class (and a subclass of it) for every step, input and output context, costing CPU
    and cyclic garbage each time, always holding the same resource objects."""

    def build(self, required_resource_keys: Any) -> Any:
        key = frozenset(required_resource_keys or ())
        shared: dict[frozenset[str], Any] = self.__dict__.setdefault("_shared", {})
        resources = shared.get(key)
        if resources is None:
            resources = shared[key] = super().build(required_resource_keys)
        return resources


def share_scoped_resources(job_context: PlanExecutionContext) -> bool:
    """Have the run's step contexts share one resources object per set of resource keys
    (see `_SharedScopedResources`). Not when a resource hands each context an object of
    its own making (`IAttachDifferentObjectToOpContext`), which may differ per call.
    True if done."""
    data = job_context._execution_data
    builder = data.scoped_resources_builder
    if type(builder) is not ScopedResourcesBuilder or any(
        isinstance(resource, IAttachDifferentObjectToOpContext)
        for resource in builder.resource_instance_dict.values()
    ):
        return False
    shared = _SharedScopedResources(builder.resource_instance_dict, builder.contains_generator)
    job_context._execution_data = data._replace(scoped_resources_builder=shared)
    return True
