"""The op tags dagloop reads, how each value is parsed, and the check that rejects a bad
one before any step of a run starts.

A bad value raises `ExecutorConfigError` naming the op, the step and the tag.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Literal, TypeVar

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

_STREAM_VALUES = {"true": True, "false": False}

T = TypeVar("T")


def step_budget(op_name: str, step_key: str, tags: Mapping[str, str]) -> float | None:
    """The time budget an op's tag sets, None if untagged."""
    expectation = "a positive, finite number of seconds"
    return _parsed(STEP_TIMEOUT_TAG, expectation, _seconds, op_name, step_key, tags)


def tagged_placement(op_name: str, step_key: str, tags: Mapping[str, str]) -> Placement | None:
    """The placement an op's tag chooses, None if untagged."""
    expectation = f"one of {', '.join(repr(p) for p in PLACEMENTS)}"
    return _parsed(PLACEMENT_TAG, expectation, _placement, op_name, step_key, tags)


def stream_tag(op_name: str, step_key: str, tags: Mapping[str, str]) -> bool | None:
    """What an op's tag says about streaming its dynamic outputs, None if untagged."""
    return _parsed(STREAM_TAG, '"true" or "false"', _streams, op_name, step_key, tags)


def _parsed(
    tag: str,
    expectation: str,
    parse: Callable[[str], T | None],
    op_name: str,
    step_key: str,
    tags: Mapping[str, str],
) -> T | None:
    """The tag's parsed value, None if untagged; a value `parse` rejects (None) names
    the op, the step and the tag."""
    raw = tags.get(tag)
    if raw is None:
        return None
    value = parse(raw)
    if value is None:
        raise ExecutorConfigError(tag, raw, expectation, op_name=op_name, step_key=step_key)
    return value


def _seconds(raw: str) -> float | None:
    try:
        seconds = float(raw)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds > 0 else None


def _streams(raw: str) -> bool | None:
    return _STREAM_VALUES.get(raw.lower())


def _placement(raw: str) -> Placement | None:
    return next((placement for placement in PLACEMENTS if placement == raw), None)


def check_op_tags(execution_plan: ExecutionPlan) -> None:
    """Reject a bad value of any op tag dagloop reads, before any step of the run starts
    (dynamic steps included: their tags are their op's)."""
    for step in execution_plan.step_dict.values():
        op_name = step.node_handle.name
        tags = step.tags or {}
        step_budget(op_name, step.key, tags)
        tagged_placement(op_name, step.key, tags)
        stream_tag(op_name, step.key, tags)
