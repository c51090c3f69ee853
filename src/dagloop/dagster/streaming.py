"""Streaming fan-out: mapped steps start while their dynamic op is still yielding.

Dagster resolves the mapping keys of a dynamic output when its producer succeeds
(`ActiveExecution.mark_success`), so every mapped step waits for the whole producer.
Here each `DynamicOutput` resolves its own mapped steps as soon as it is *handled*: the
producer's IO manager stored it (HANDLED_OUTPUT follows the output's STEP_OUTPUT), and
the orchestrator's barrier stores the events before any step starts. The steps join
Dagster's own plan and `ActiveExecution` (`_internals.resolve_mapping_key_ahead`), so
`max_concurrent`, tag limits, pools, priorities and retries apply as to any step.

Streaming applies to every producer under the executor's `step_dependency_config:
{require_upstream_step_success: false}`, and to a producer whose op has the tag
`dagloop/stream_dynamic_outputs: "true"` (`"false"` opts a producer out). What depends on
the producer as a whole (`.collect()`, a static downstream op) still waits for it, as does
every mapped step of a producer that does not stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    ActiveExecution,
    DagsterEvent,
    ExecutionPlan,
    mapped_steps_by_dynamic_output,
    resolve_mapping_key_ahead,
)

#: Streamed outputs start their mapped steps in scheduling rounds at least this far apart.
#: A producer yielding thousands of outputs in quick succession would otherwise cost a
#: round per output, and each round builds Dagster's known state (which grows with the
#: outputs) and waits for the event log: 1.22x the CPU per step of the same run without
#: streaming at 10,000 outputs, against 1.14x paced (benchmarks/streaming.py, 5 rounds).
STREAM_ROUND_SECONDS = 0.01

#: Op tag: "true" streams the op's dynamic outputs to its mapped steps.
STREAM_TAG = "dagloop/stream_dynamic_outputs"
_TAG_VALUES = ("true", "false")


def stream_tag(op_name: str, step_key: str, tags: Mapping[str, str]) -> bool | None:
    """What an op's tag says about streaming (None: no tag); a value other than
    true/false names the op."""
    value = tags.get(STREAM_TAG)
    if value is None:
        return None
    if value.lower() not in _TAG_VALUES:
        raise dg.DagsterInvalidConfigError(
            f"Op '{op_name}' (step '{step_key}'): tag '{STREAM_TAG}' must be \"true\" or "
            f'"false", got {value!r}.',
            [],
            value,
        )
    return value.lower() == "true"


class StreamedFanOut:
    """Resolves the mapped steps of each handled DynamicOutput of streaming producers."""

    def __init__(
        self, plan: ExecutionPlan, active: ActiveExecution, *, every_producer: bool
    ) -> None:
        self._plan = plan
        self._active = active
        self._every_producer = every_producer
        self._mapped = mapped_steps_by_dynamic_output(plan)
        self._streams: dict[str, bool] = {}
        #: The mapping key of a producer's output whose STEP_OUTPUT was seen and whose
        #: HANDLED_OUTPUT (the IO manager stored it) is still to come.
        self._being_handled: dict[tuple[str, str], str] = {}
        #: Mapped steps resolved ahead of their producer's success.
        self.resolved_ahead = 0

    @classmethod
    def for_run(
        cls, plan: ExecutionPlan, active: ActiveExecution, *, every_producer: bool
    ) -> StreamedFanOut | None:
        """None when nothing of the plan can stream."""
        streamer = cls(plan, active, every_producer=every_producer)
        if not any(streamer._streaming(producer) for producer, _ in streamer._mapped):
            return None
        return streamer

    def on_event(self, event: DagsterEvent) -> list[str]:
        """Feed every event of a step; returns the keys of mapped steps that became
        pending (the scheduler should look for steps to start)."""
        step_key = event.step_key
        if step_key is None:
            return []
        if event.is_successful_output:
            handle = event.step_output_data.step_output_handle
            source = (step_key, handle.output_name)
            mapping_key = handle.mapping_key
            if mapping_key is not None and source in self._mapped and self._streaming(step_key):
                self._being_handled[source] = mapping_key
            return []
        if event.event_type == dg.DagsterEventType.HANDLED_OUTPUT:
            handled: Any = event.event_specific_data  # HandledOutputData
            source = (step_key, handled.output_name)
            mapping_key = self._being_handled.pop(source, None)
            if mapping_key is None:
                return []
            added = resolve_mapping_key_ahead(
                self._plan, self._active, self._mapped[source], step_key, source[1], mapping_key
            )
            self.resolved_ahead += len(added)
            return added
        return []

    def _streaming(self, producer_key: str) -> bool:
        streams = self._streams.get(producer_key)
        if streams is None:
            step = self._plan.get_step_by_key(producer_key)
            tagged = stream_tag(step.node_handle.name, producer_key, step.tags or {})
            streams = self._every_producer if tagged is None else tagged
            self._streams[producer_key] = streams
        return streams


class StreamRounds:
    """Paces the scheduling rounds that streamed outputs ask for: a round at once when
    none was asked for within `STREAM_ROUND_SECONDS`, otherwise one timer at the end of
    that interval for every output in between (a round for another reason, such as a
    step ending, takes them earlier)."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        self._loop = loop
        self._wake = wake
        self._next_round = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def output_ready(self) -> bool:
        """Called when a streamed output made steps ready; True when their round is due
        now (a producer holding the loop should then let it go round)."""
        now = self._loop.time()
        if now >= self._next_round:
            self._round_at(now)
            return True
        if self._timer is None:
            self._timer = self._loop.call_at(self._next_round, self._timer_due)
        return False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _timer_due(self) -> None:
        self._timer = None
        self._round_at(self._loop.time())

    def _round_at(self, now: float) -> None:
        self._next_round = now + STREAM_ROUND_SECONDS
        self._wake()
