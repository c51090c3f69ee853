"""Streaming fan-out: mapped steps start while their dynamic op is still yielding.

Dagster resolves the mapping keys of a dynamic output when its producer succeeds
(`ActiveExecution.mark_success`), so every mapped step waits for the whole producer.
Here each `DynamicOutput` resolves its own mapped steps once it is *handled*: the
producer's IO manager stored it (HANDLED_OUTPUT follows the output's STEP_OUTPUT), and
the orchestrator's barrier stores the events before any step starts. The steps join
Dagster's own plan and `ActiveExecution` (`_internals.resolve_mapping_key_ahead`), so
`max_concurrent`, tag limits, pools, priorities and retries apply as to any step.

Handled outputs are resolved in paced streaming rounds (`StreamRounds`): the first at
once, then at most one per `STREAM_ROUND_SECONDS`, and always before Dagster sees the
producer end. A round that starts steps waits for the event log and builds Dagster's
known state, whose size grows with the outputs: resolved one by one, a producer of
10,000 instant outputs made hundreds of such rounds.

Streaming applies to every producer under the executor's `step_dependency_config:
{require_upstream_step_success: false}`, and to a producer whose op has the tag
`dagloop/stream_dynamic_outputs: "true"` (`"false"` opts a producer out). What depends on
the producer as a whole (`.collect()`, a static downstream op) still waits for it, as does
every mapped step of a producer that does not stream.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    ActiveExecution,
    DagsterEvent,
    EngineEventData,
    ExecutionPlan,
    mapped_steps_by_dynamic_output,
    resolve_mapping_key_ahead,
)
from dagloop.dagster.attempts import TERMINAL_EVENT_TYPES
from dagloop.dagster.tags import stream_tag

#: Streamed outputs are resolved in rounds at least this far apart (the first at once).
#: It bounds how late a mapped step starts after its output (outputs further apart than
#: this each get a round at once) and how many rounds a producer of thousands of instant
#: outputs costs.
STREAM_ROUND_SECONDS = 0.05


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
        #: Handled outputs whose mapped steps are still to be resolved (at the next
        #: streaming round), as (producer key, output name, mapping key).
        self._handled: list[tuple[str, str, str]] = []
        self._handling_producers: set[str] = set()
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

    @property
    def has_handled(self) -> bool:
        """Outputs are waiting for their streaming round."""
        return bool(self._handled)

    def on_event(self, event: DagsterEvent) -> bool:
        """Feed every event of a step, after Dagster's `ActiveExecution` handled it; True
        when a streamed output was handled (its mapped steps wait for a streaming round)."""
        step_key = event.step_key
        if step_key is None:
            return False
        if event.is_successful_output:
            handle = event.step_output_data.step_output_handle
            source = (step_key, handle.output_name)
            mapping_key = handle.mapping_key
            if mapping_key is not None and source in self._mapped and self._streaming(step_key):
                self._being_handled[source] = mapping_key
            return False
        if event.event_type == dg.DagsterEventType.HANDLED_OUTPUT:
            handled: Any = event.event_specific_data  # HandledOutputData
            source = (step_key, handled.output_name)
            mapping_key = self._being_handled.pop(source, None)
            if mapping_key is None:
                return False
            self._handled.append((step_key, source[1], mapping_key))
            self._handling_producers.add(step_key)
            return True
        return False

    def before_event(self, event: DagsterEvent) -> None:
        """Feed every event of a step before Dagster's `ActiveExecution` handles it: a
        producer's outputs are resolved before Dagster sees the producer end, so that
        its end (success, failure or retry) meets them resolved, whatever the pacing."""
        terminal = event.event_type_value in TERMINAL_EVENT_TYPES
        if terminal and event.step_key in self._handling_producers:
            self.resolve_handled()

    def resolve_handled(self) -> None:
        """Resolve the mapped steps of every handled output: they become pending in
        `ActiveExecution`."""
        for producer, output_name, mapping_key in self._handled:
            added = resolve_mapping_key_ahead(
                self._plan,
                self._active,
                self._mapped[(producer, output_name)],
                producer,
                output_name,
                mapping_key,
            )
            self.resolved_ahead += len(added)
        self._handled.clear()
        self._handling_producers.clear()

    def summary(self, job_context: Any) -> list[DagsterEvent]:
        """The run's engine event saying how many mapped steps were resolved ahead."""
        if not self.resolved_ahead:
            return []
        return [
            DagsterEvent.engine_event(
                job_context,
                f"dagloop async executor: {self.resolved_ahead} mapped step(s) were "
                "resolved as their DynamicOutput was stored, before their dynamic op "
                "finished",
                EngineEventData(
                    metadata={"resolved_ahead": dg.MetadataValue.int(self.resolved_ahead)}
                ),
            )
        ]

    def _streaming(self, producer_key: str) -> bool:
        streams = self._streams.get(producer_key)
        if streams is None:
            step = self._plan.get_step_by_key(producer_key)
            streams = streams_outputs(step, every_producer=self._every_producer)
            self._streams[producer_key] = streams
        return streams


def streams_outputs(step: Any, *, every_producer: bool) -> bool:
    """Whether `step` has dynamic outputs and they stream: its op's tag says so, or,
    untagged, `every_producer` (the executor's `step_dependency_config` lets steps start
    before their upstream succeeded)."""
    if not any(output.is_dynamic for output in step.step_outputs):
        return False
    tagged = stream_tag(step.node_handle.name, step.key, step.tags or {})
    return every_producer if tagged is None else tagged


class ProducerTurns:
    """Paces the turns a streaming producer hosted off the run's loop (on a Dask
    worker) gives its own loop: there its stored outputs are written and sent to the
    run process, which a producer that never awaits between its yields would hold back
    until it ends. At most one turn per `STREAM_ROUND_SECONDS`, so the outputs still go
    out in batches."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._next_turn = 0.0

    def due(self) -> bool:
        """An output was handled: True when the producer should let its loop go round."""
        now = self._loop.time()
        if now < self._next_turn:
            return False
        self._next_turn = now + STREAM_ROUND_SECONDS
        return True


class StreamRounds:
    """Paces streaming rounds: a round at once when none was taken within
    `STREAM_ROUND_SECONDS`, otherwise one timer at the end of that interval for every
    output in between. A scheduling round for another reason (a step ending) takes the
    streaming round only when it is due."""

    def __init__(self, loop: asyncio.AbstractEventLoop, wake: Callable[[], None]) -> None:
        self._loop = loop
        self._wake = wake
        self._next_round = 0.0
        self._timer: asyncio.TimerHandle | None = None

    def output_ready(self) -> bool:
        """Called when a streamed output was handled; True when a round is due now (the
        scheduler is woken; a producer holding the loop should let it go round)."""
        if self._loop.time() >= self._next_round:
            self._wake()
            return True
        self._arm()
        return False

    def take(self) -> bool:
        """At a scheduling round with outputs waiting: True when the streaming round is
        due (the interval restarts now); otherwise the timer will wake the scheduler."""
        now = self._loop.time()
        if now >= self._next_round:
            self._next_round = now + STREAM_ROUND_SECONDS
            self.close()  # its wake-up would find nothing waiting
            return True
        self._arm()
        return False

    def close(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = self._loop.call_at(self._next_round, self._timer_due)

    def _timer_due(self) -> None:
        self._timer = None
        self._wake()
