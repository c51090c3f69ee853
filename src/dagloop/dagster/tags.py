"""The op tags dagloop reads, how each value is parsed, and the check that rejects a bad
one before any step of a run starts.

A bad value raises `ExecutorConfigError` naming the op, the step and the tag.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import TYPE_CHECKING, Literal

from dagloop.dagster.errors import ExecutorConfigError

if TYPE_CHECKING:
    from dagloop.dagster._internals import ExecutionPlan

#: Op tag that overrides `step_timeout_seconds` for one op (a number of seconds).
STEP_TIMEOUT_TAG = "dagloop/step_timeout_seconds"

#: Op tag choosing where one op's steps run: "local" (the run's event loop) or "cluster".
PLACEMENT_TAG = "dagloop/placement"

#: Op tag: "true" streams the op's dynamic outputs to its mapped steps.
STREAM_TAG = "dagloop/stream_dynamic_outputs"

Placement = Literal["local", "cluster"]
PLACEMENTS: tuple[Placement, ...] = ("local", "cluster")

_STREAM_VALUES = ("true", "false")


def step_budget(op_name: str, step_key: str, tags: Mapping[str, str]) -> float | None:
    """The time budget an op's tag sets, None if untagged."""
    tagged = tags.get(STEP_TIMEOUT_TAG)
    if tagged is None:
        return None
    try:
        budget = float(tagged)
    except ValueError:
        budget = math.nan
    if not (math.isfinite(budget) and budget > 0):
        raise ExecutorConfigError(
            STEP_TIMEOUT_TAG,
            tagged,
            "a positive, finite number of seconds",
            op_name=op_name,
            step_key=step_key,
        )
    return budget


def tagged_placement(op_name: str, step_key: str, tags: Mapping[str, str]) -> Placement | None:
    """The placement an op's tag chooses, None if untagged."""
    tagged = tags.get(PLACEMENT_TAG)
    if tagged is None:
        return None
    if tagged not in PLACEMENTS:
        raise ExecutorConfigError(
            PLACEMENT_TAG,
            tagged,
            f"one of {', '.join(repr(p) for p in PLACEMENTS)}",
            op_name=op_name,
            step_key=step_key,
        )
    return tagged


def stream_tag(op_name: str, step_key: str, tags: Mapping[str, str]) -> bool | None:
    """What an op's tag says about streaming its dynamic outputs, None if untagged."""
    value = tags.get(STREAM_TAG)
    if value is None:
        return None
    if value.lower() not in _STREAM_VALUES:
        raise ExecutorConfigError(
            STREAM_TAG, value, '"true" or "false"', op_name=op_name, step_key=step_key
        )
    return value.lower() == "true"


def check_op_tags(execution_plan: ExecutionPlan) -> None:
    """Reject a bad value of any op tag dagloop reads, before any step of the run starts
    (dynamic steps included: their tags are their op's)."""
    for step in execution_plan.step_dict.values():
        op_name = step.node_handle.name
        tags = step.tags or {}
        step_budget(op_name, step.key, tags)
        tagged_placement(op_name, step.key, tags)
        stream_tag(op_name, step.key, tags)
