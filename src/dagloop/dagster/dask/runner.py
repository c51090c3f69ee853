"""The orchestrator's side of the Dask scale-out: submit steps, await them natively
with the asynchronous Dask client on the run's event loop, feed their events back."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import itertools
import sys
import uuid
from collections.abc import Callable, Mapping, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    ExecutionPlan,
    ExecutionStep,
    Executor,
    KnownExecutionState,
    PlanExecutionContext,
    ReconstructableJob,
    run_shard_batch_writer,
    serializable_error_info_from_exc_info,
)
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.dask.config import DaskConfig
from dagloop.dagster.dask.messages import CLOSED, END, STORE
from dagloop.dagster.dask.session import RunSpec, StepCommand
from dagloop.dagster.dask.worker import close_session, run_step
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.step_run import StepRun
from dagloop.runtime.dask_client import dask_client

Mappings = Mapping[str, Mapping[str, Sequence[str] | None]]

#: After a step's Dask task failed (e.g. its worker died), how long to wait for the
#: step's last events before reporting it failed from the orchestrator.
DRAIN_AFTER_ERROR_SECONDS = 2.0
#: How long the workers get to tear a run's resources down when it ends.
CLOSE_SESSIONS_SECONDS = 60.0


@dataclass(eq=False)
class _InFlight:
    accept: Callable[[DagsterEvent], None]
    terminal: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    resource_error: Any = None
    #: A STEP_UP_FOR_RETRY, handed to the orchestrator only once the attempt has ended:
    #: a retry started earlier would be the same step key still in flight.
    retry: DagsterEvent | None = None


class DaskSteps:
    """Runs the steps placed on the cluster; one instance per run, used on the run's loop."""

    def __init__(
        self,
        config: DaskConfig,
        job_context: PlanExecutionContext,
        execution_plan: ExecutionPlan,
        executor: Executor,
        executor_config: AsyncExecutorConfig,
        event_log: RunEventLog,
    ) -> None:
        job = job_context.job
        if not isinstance(job, ReconstructableJob):  # the executor's requirements say so first
            raise dg.DagsterUnmetExecutorRequirementsError(
                f"Job '{job_context.job_name}' is not reconstructable; steps cannot run on a "
                "Dask cluster. Load it with dg.reconstructable(...) or from a code location."
            )
        self._config = config
        self._job_context = job_context
        self._executor = executor
        self._event_log = event_log
        self._grace = executor_config.termination_grace_seconds
        self._topic = f"dagloop-{job_context.run_id}-{uuid.uuid4().hex[:8]}"
        self._tokens = itertools.count()
        self._in_flight: dict[str, _InFlight] = {}
        self._spec = RunSpec(
            topic=self._topic,
            run_config=dict(job_context.run_config),
            dagster_run=job_context.dagster_run,
            instance_ref=job_context.instance.get_ref(),
            recon_job=job,
            retry_mode=executor_config.retries,
            step_dependency_config=executor_config.step_dependency_config,
            step_keys_to_execute=list(execution_plan.step_keys_to_execute),
            known_state=execution_plan.known_state,
            repository_load_data=execution_plan.repository_load_data,
            step_host=executor_config.step_host,
            events_written_by=_who_writes_events(config, job_context.instance),
            sync_threads=executor_config.sync_threads,
            host_threads=config.steps_per_worker,
            blocked_loop_warning_seconds=executor_config.blocked_loop_warning_seconds,
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._sessions_closed = 0
        self._spec_on_workers: Any = None
        self._mappings: tuple[int, asyncio.Future[Any]] | None = None
        self._session_closed = asyncio.Event()

    # -- lifecycle (on the run's loop) -------------------------------------------------

    async def __aenter__(self) -> DaskSteps:
        config = self._config
        # A failed entry leaves nothing open: dask_client cleans up after itself.
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(
            dask_client(
                address=config.address,
                processes=config.processes,
                threads_per_worker=config.steps_per_worker,
            )
        )
        # Exit in reverse: close the workers' sessions (their last entries still reach
        # the run's event log), then unsubscribe.
        self._client.subscribe_topic(self._topic, self._on_message)
        stack.callback(self._client.unsubscribe_topic, self._topic)
        # Sent to every worker once, not pickled with every step.
        self._spec_on_workers = await self._broadcast(self._spec)
        stack.push_async_callback(self._close_sessions)
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._client = None

    async def _mappings_on_workers(self, mappings: Mappings) -> Any:
        """The run's dynamic mappings as a Dask future of data already on the workers:
        sent once each time they grow (they are O(steps); per step they would make a
        fan-out quadratic), not with every step."""
        size = sum(len(keys or ()) for outputs in mappings.values() for keys in outputs.values())
        if self._mappings is None or self._mappings[0] != size:
            self._mappings = (size, asyncio.ensure_future(self._broadcast(dict(mappings))))
        return await self._mappings[1]

    async def _broadcast(self, value: Any) -> Any:
        # In a list: `scatter` would take a dict for many values by key.
        (future,) = await self._client.scatter([value], broadcast=True, hash=False)
        return future

    async def _close_sessions(self) -> None:
        """Tear the run's resources down on every worker that hosted its steps, and
        wait for their CLOSED messages: the teardown's entries were sent before."""
        try:
            async with asyncio.timeout(CLOSE_SESSIONS_SECONDS):
                hosted = await self._client.run(close_session, self._topic)
                expected = sum(1 for had_session in hosted.values() if had_session)
                while self._sessions_closed < expected:
                    self._session_closed.clear()
                    await self._session_closed.wait()
        except Exception as exc:  # the steps are over; a teardown problem is reported
            self._job_context.log.warning(
                f"Closing the run's sessions on the Dask workers failed: {exc!r}"
            )

    def describe(self) -> str:
        if self._config.processes is not None:
            return f"a local Dask cluster of {self._config.processes} worker processes"
        return f"the Dask cluster at {self._config.address}"

    # -- RemoteSteps -------------------------------------------------------------------

    def accepts(self, step: ExecutionStep) -> bool:
        placement = self._config.placement_of(step.node_handle.name, step.key, step.tags)
        return placement == "cluster"

    async def execute(
        self,
        run: StepRun,
        known_state: KnownExecutionState,
        accept: Callable[[DagsterEvent], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        try:
            mappings = await self._mappings_on_workers(known_state.dynamic_mappings)
        except asyncio.CancelledError:
            if run.cancel_reason is None:
                raise
            task = asyncio.current_task()
            if task is not None:
                task.uncancel()
            fail(run.cancel_reason)  # stopped before it was sent
            return
        token = f"{run.key}#{next(self._tokens)}"
        record = _InFlight(accept=accept)
        self._in_flight[token] = record
        command = StepCommand(
            token=token, step_key=run.key, known_state=_for_one_step(run.step, known_state)
        )
        future = self._client.submit(
            run_step,
            self._spec_on_workers,
            mappings,
            command,
            key=f"dagloop-step-{token}-{uuid.uuid4().hex[:8]}",
            pure=False,
        )
        try:
            try:
                await future
                await record.ended.wait()
                if record.resource_error is not None and not record.terminal.is_set():
                    # As the multiprocess executor does: the step never started.
                    accept(
                        self._executor.log_failure_or_retry_event_after_error(
                            run.context, record.resource_error, known_state
                        )
                    )
            except asyncio.CancelledError:
                if run.cancel_reason is None:
                    raise  # the orchestrator itself is torn down
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self._stop(future, record, run, fail)
            except Exception:
                await self._after_task_error(run, record, known_state, sys.exc_info())
        finally:
            del self._in_flight[token]
            if record.retry is not None:
                accept(record.retry)

    async def _stop(
        self,
        future: Any,
        record: _InFlight,
        run: StepRun,
        fail: Callable[[BaseException], None],
    ) -> None:
        """Cancel the step's Dask task; give the step `grace` seconds to report its end."""
        await self._client.cancel([future])
        try:
            await asyncio.wait_for(record.terminal.wait(), self._grace)
        except TimeoutError:
            assert run.cancel_reason is not None
            fail(run.cancel_reason)

    async def _after_task_error(
        self,
        run: StepRun,
        record: _InFlight,
        known_state: KnownExecutionState,
        exc_info: Any,
    ) -> None:
        error = serializable_error_info_from_exc_info(exc_info)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.ended.wait(), DRAIN_AFTER_ERROR_SECONDS)
        if record.terminal.is_set():
            return
        record.accept(
            DagsterEvent.engine_event(
                run.context,
                f"The Dask task of step '{run.key}' failed: {error.message.strip()}",
                EngineEventData.engine_error(error),
            )
        )
        # As the multiprocess executor does when a child process crashes.
        record.accept(
            self._executor.log_failure_or_retry_event_after_error(run.context, error, known_state)
        )

    # -- events ------------------------------------------------------------------------

    def _on_message(self, message: tuple[float, list[Any]]) -> None:
        _, payload = message
        if payload[0] == STORE:
            self._event_log.store_serialized(payload[1])
        else:
            # Handled once every entry the worker sent before it is written, so the
            # orchestrator never acts on a step event whose entries are not stored yet.
            self._event_log.after_written(functools.partial(self._dispatch, payload))

    def _dispatch(self, payload: list[Any]) -> None:
        """A worker's message other than STORE, after the entries sent before it."""
        kind = payload[0]
        if kind == CLOSED:
            self._sessions_closed += 1
            self._session_closed.set()
            return
        record = self._in_flight.get(payload[1])
        if record is None:
            return  # a step already given up on; its entries were written anyway
        if kind == END:
            if payload[2] is not None:
                record.resource_error = dg.deserialize_value(payload[2])
            record.ended.set()
            return
        event = dg.deserialize_value(payload[2], DagsterEvent)
        if (
            event.is_step_success
            or event.is_step_failure
            or event.is_step_skipped
            or (event.is_step_up_for_retry)
        ):
            record.terminal.set()
        if event.is_resource_init_failure:
            record.resource_error = event.engine_event_data.error
        if event.is_step_up_for_retry:
            record.retry = event
            return
        record.accept(event)


def _for_one_step(step: ExecutionStep, known: KnownExecutionState) -> KnownExecutionState:
    """What of the run's known state one step's execution reads (its ready inputs, its
    own retry count, the parent run's state); the dynamic mappings travel separately.
    The full state is O(steps), and would make a fan-out's submissions quadratic."""
    inputs = {
        handle
        for step_input in step.step_inputs
        for handle in step_input.get_step_output_handle_dependencies()
    }
    attempts = known.previous_retry_attempts.get(step.key)
    return KnownExecutionState(
        previous_retry_attempts={step.key: attempts} if attempts is not None else {},
        dynamic_mappings={},
        step_output_versions=known.step_output_versions,
        ready_outputs=inputs & known.ready_outputs,
        parent_state=known.parent_state,
    )


def _who_writes_events(config: DaskConfig, instance: dg.DagsterInstance) -> str:
    """'auto': the run process where it writes in batches (SQLite, PostgreSQL, in memory:
    one writer, many entries per transaction, cheaper than the workers' many small
    transactions); else the workers, in parallel (one writer of one entry at a time
    would be the bottleneck)."""
    if config.events_written_by != "auto":
        return config.events_written_by
    return "run" if run_shard_batch_writer(instance) is not None else "workers"
