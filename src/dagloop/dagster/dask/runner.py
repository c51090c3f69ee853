"""The orchestrator's side of the Dask scale-out: submit steps, await them natively
with the asynchronous Dask client on the run's event loop, feed their events back.

An attempt placed on the cluster stays WAITING in the run's `AttemptTable` until its
worker reports its STEP_START (or, when the run stops, until a worker has claimed it:
claims.py), so a run that stops withdraws the attempts no worker claimed, and they
never run. Each
attempt runs at most once: a task Dask runs again is refused on its worker, and an
attempt whose worker was lost fails (or retries) once, naming the worker."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import sys
import uuid
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    ExecutionPlan,
    ExecutionStep,
    Executor,
    KnownExecutionState,
    PlanExecutionContext,
    ReconstructableJob,
    serializable_error_info_from_exc_info,
)
from dagloop.dagster.attempts import AttemptState
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.dask import claims
from dagloop.dagster.dask.config import DaskConfig
from dagloop.dagster.dask.lost import WorkerLostError, lost_workers_event
from dagloop.dagster.dask.messages import (
    BEGAN,
    CLOSED,
    END,
    INTERRUPT,
    RAN,
    STORE,
    TIMEOUT,
)
from dagloop.dagster.dask.run_spec import run_spec, step_known_state
from dagloop.dagster.dask.session import StepCommand
from dagloop.dagster.dask.shared_inputs import SharedInputs
from dagloop.dagster.dask.worker import close_session, run_step
from dagloop.dagster.dask.worker_calls import WorkerCalls
from dagloop.dagster.errors import StepTimeoutError
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.step_run import StepRun
from dagloop.dagster.tags import step_budget
from dagloop.runtime.dask_client import dask_client

#: After a step's Dask task failed or was refused (its worker was lost), how long to
#: wait for the step's last messages before reporting it lost.
DRAIN_AFTER_ERROR_SECONDS = 2.0
#: How often a step whose task failed before any worker claimed it is submitted again,
#: and the pause before each try (times the try's number).
UNCLAIMED_RESUBMISSIONS = 3
RESUBMIT_BACKOFF_SECONDS = 0.5
#: How long the workers get to tear a run's resources down when it ends.
CLOSE_SESSIONS_SECONDS = 60.0
#: How long a call to the scheduler's claims may take before it is given up.
CLAIMS_CALL_SECONDS = 10.0
#: A step on a worker fails at its budget there; the run process asks it to stop only
#: this much later (its own failure is on its way by then, on any sane cluster).
BUDGET_BACKSTOP_SECONDS = 1.0


@dataclass(eq=False)
class _InFlight:
    run: StepRun
    accept: Callable[[DagsterEvent], None]
    known_state: KnownExecutionState
    budget: float | None
    terminal: asyncio.Event = field(default_factory=asyncio.Event)
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    #: The worker that claimed the attempt (None: none yet).
    worker: str | None = None
    #: Why the attempt's step code ended without (perhaps) its terminal event: the
    #: run's resources failed to open on its worker, or the error its code raised.
    end_error: Any = None  # SerializableErrorInfo
    #: A STEP_UP_FOR_RETRY, handed to the orchestrator only once the attempt has ended:
    #: a retry started earlier would be the same step key still in flight.
    retry: DagsterEvent | None = None
    backstop: asyncio.TimerHandle | None = None


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
        self._default_budget = executor_config.step_timeout_seconds
        #: By attempt token, and by step key (one attempt of a step is in flight at once).
        self._in_flight: dict[int, _InFlight] = {}
        self._by_step: dict[str, _InFlight] = {}
        #: Workers this run lost (each reported once).
        self._lost: set[str] = set()
        self._calls: WorkerCalls | None = None
        self._spec = run_spec(
            self._topic, job, job_context, execution_plan, executor_config, config
        )
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._sessions_closed = 0
        #: The run's spec and mappings, sent to the workers once, not with every step.
        self._on_workers: SharedInputs | None = None
        self._session_closed = asyncio.Event()

    # -- lifecycle (on the run's loop) -------------------------------------------------

    async def __aenter__(self) -> DaskSteps:
        config = self._config
        # A failed entry leaves nothing open: dask_client cleans up after itself.
        stack = AsyncExitStack()
        import dask

        # A local cluster reports a task whose worker died (KilledWorker) instead of
        # running it again; on a cluster at `address` the claims refuse a rerun.
        local = {"distributed.scheduler.allowed-failures": 0} if config.processes else {}
        with dask.config.set(local):
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
        self._on_workers = await SharedInputs.send(self._client, self._spec)
        stack.push_async_callback(self._forget_claims)
        stack.push_async_callback(self._close_sessions)
        self._stack = stack
        return self

    async def __aexit__(self, *exc: object) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()
        self._client = None

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

    async def _forget_claims(self) -> None:
        with contextlib.suppress(Exception):
            await self._on_scheduler(claims.forget, self._topic)
        if self._calls is not None:
            self._calls.cancel_all()

    async def _on_scheduler(self, function: Callable[..., Any], *args: Any) -> Any:
        async with asyncio.timeout(CLAIMS_CALL_SECONDS):
            return await self._client.run_on_scheduler(function, *args)

    @property
    def _shared(self) -> SharedInputs:
        assert self._on_workers is not None, "used between __aenter__ and __aexit__"
        return self._on_workers

    @property
    def _worker_calls(self) -> WorkerCalls:
        if self._calls is None:
            self._calls = WorkerCalls(self._client, self._topic)
        return self._calls

    def describe(self) -> str:
        if self._config.processes is not None:
            return f"a local Dask cluster of {self._config.processes} worker processes"
        return f"the Dask cluster at {self._config.address}"

    # -- RemoteSteps -------------------------------------------------------------------

    def accepts(self, step: ExecutionStep) -> bool:
        placement = self._config.placement_of(step.node_handle.name, step.key, step.tags)
        return placement == "cluster"

    async def before_stopping(self) -> None:
        """The run stops: close its claims, so that no worker begins an attempt from now
        on; an attempt a worker claimed before counts as begun (its BEGAN may still be
        on its way) and is stopped, the others are withdrawn and never run."""
        try:
            claimed: dict[str, str] = await self._on_scheduler(claims.stop, self._topic)
        except Exception as exc:  # the scheduler is gone: no worker can claim either
            self._job_context.log.warning(
                f"Closing the run's claims on the Dask scheduler failed: {exc!r}"
            )
            return
        for key, worker in claimed.items():
            record = self._in_flight.get(claims.token_of(key))
            if record is not None and record.run.state is AttemptState.WAITING:
                record.worker = worker
                self._began(record)

    async def execute(
        self,
        run: StepRun,
        known_state: KnownExecutionState,
        accept: Callable[[DagsterEvent], None],
        fail: Callable[[BaseException], None],
    ) -> None:
        mappings = await self._shared.mappings(known_state.dynamic_mappings)
        token = run.attempt.token
        budget = step_budget(run.op_name, run.key, run.step.tags)
        record = _InFlight(
            run=run,
            accept=accept,
            known_state=known_state,
            budget=budget if budget is not None else self._default_budget,
        )
        self._in_flight[token] = record
        self._by_step[run.key] = record
        command = StepCommand(
            token=token,
            step_key=run.key,
            known_state=step_known_state(run.step, known_state),
            budget=record.budget,
        )
        try:
            try:
                await self._run_to_end(record, command, mappings)
            except asyncio.CancelledError:
                if run.cancel_reason is None:
                    # Withdrawn (no worker claimed it; none ever will), or the
                    # orchestrator itself is torn down: a begun step is stopped too.
                    if run.attempt.begun and record.worker is not None:
                        self._worker_calls.interrupt(record.worker, token, INTERRUPT)
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self._stop(record, fail)
        finally:
            del self._in_flight[token]
            if self._by_step.get(run.key) is record:
                del self._by_step[run.key]
            if record.backstop is not None:
                record.backstop.cancel()
            if record.retry is not None:
                accept(record.retry)

    # -- one attempt -------------------------------------------------------------------

    async def _run_to_end(self, record: _InFlight, command: StepCommand, mappings: Any) -> None:
        run = record.run
        unclaimed_failures = 0
        while True:
            future = self._client.submit(
                run_step,
                self._shared.spec,
                mappings,
                command,
                key=f"dagloop-step-{run.key}-{command.token}-{uuid.uuid4().hex[:8]}",
                pure=False,
            )
            error: Any = None
            try:
                outcome = await future
            except asyncio.CancelledError:
                self._worker_calls.in_background(self._client.cancel([future]))
                raise
            except Exception:
                outcome, error = None, serializable_error_info_from_exc_info(sys.exc_info())
            if outcome == RAN:
                await record.ended.wait()
                self._after_end(record)
                return
            # Refused (claimed before: its worker was lost and Dask ran it again; or
            # the run stopped), or the task failed (KilledWorker: its worker was lost).
            if not run.attempt.begun:
                key = claims.claim_key(command.token, command.submission)
                worker = await self._on_scheduler(claims.holder, self._topic, key)
                if worker is None:
                    if error is None:
                        await asyncio.Future()  # refused as the run stops: it is withdrawn
                    # Failed before any worker claimed it: what every task reads may have
                    # been lost with a worker. Sent again, it is tried a few times, then
                    # the step fails (or retries) with the error, never silently.
                    unclaimed_failures += 1
                    if unclaimed_failures > UNCLAIMED_RESUBMISSIONS:
                        self._began(record)
                        record.accept(
                            self._executor.log_failure_or_retry_event_after_error(
                                run.context, error, record.known_state
                            )
                        )
                        return
                    await asyncio.sleep(RESUBMIT_BACKOFF_SECONDS * unclaimed_failures)
                    mappings = await self._shared.send_lost(record.known_state.dynamic_mappings)
                    continue
                record.worker = worker
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(record.ended.wait(), DRAIN_AFTER_ERROR_SECONDS)
            if record.ended.is_set():  # it ended before its worker was lost
                self._after_end(record)
                return
            if not run.attempt.begun:
                # Its worker was lost before the step's code began (no STEP_START):
                # it runs now, once, wherever it is claimed again.
                record.worker = None
                command = dataclasses.replace(command, submission=command.submission + 1)
                continue
            self._report_lost(record, error)
            return

    def _after_end(self, record: _InFlight) -> None:
        """The attempt's step code ended on its worker (END)."""
        if record.terminal.is_set():
            return
        if record.run.state is AttemptState.WAITING:
            self._began(record)  # it ends without having started: resources failed
        if record.end_error is None:
            return  # its code ended without its end: the orchestrator tells Dagster
        # As the multiprocess executor does for a child whose step could not run.
        record.accept(
            self._executor.log_failure_or_retry_event_after_error(
                record.run.context, record.end_error, record.known_state
            )
        )

    def _report_lost(self, record: _InFlight, cause: Any) -> None:
        """The attempt's worker was lost while the attempt ran: one engine event per
        lost worker, listing the steps it took along, and one failure (or retry, as the
        step's RetryPolicy says) for each."""
        worker = record.worker or "an unknown worker"
        if worker not in self._lost:
            self._lost.add(worker)
            steps = sorted(
                other.run.key
                for other in self._in_flight.values()
                if other.worker == worker and other.run.attempt.begun and not other.ended.is_set()
            )
            record.accept(lost_workers_event(self._job_context, worker, steps, cause))
        error = WorkerLostError.info(worker, record.run.key, cause)
        record.accept(
            self._executor.log_failure_or_retry_event_after_error(
                record.run.context, error, record.known_state
            )
        )

    async def _stop(self, record: _InFlight, fail: Callable[[BaseException], None]) -> None:
        """The run asked a begun attempt to stop: its worker interrupts it; one that
        has not reported its end `grace` seconds later is reported failed here."""
        run = record.run
        reason = run.cancel_reason
        assert reason is not None
        if record.worker is not None:
            kind = TIMEOUT if isinstance(reason, StepTimeoutError) else INTERRUPT
            self._worker_calls.interrupt(record.worker, run.attempt.token, kind)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.ended.wait(), self._grace)
        if record.ended.is_set():
            if record.terminal.is_set():
                return
            if record.end_error is not None:
                self._after_end(record)
                return
        if not record.terminal.is_set():
            fail(reason)

    def _began(self, record: _InFlight) -> None:
        """The attempt began on its worker (or will: a worker claimed it as the run
        stops)."""
        if not record.run.begin():
            return  # withdrawn: cannot happen, a withdrawn attempt is never claimed
        if record.budget is not None:
            loop = asyncio.get_running_loop()
            record.backstop = loop.call_later(
                record.budget + BUDGET_BACKSTOP_SECONDS, self._over_budget, record
            )

    def _over_budget(self, record: _InFlight) -> None:
        """The attempt's worker did not report its end at its budget: stop it from here."""
        run = record.run
        assert record.budget is not None
        if not record.terminal.is_set() and not record.ended.is_set():
            run.cancel(StepTimeoutError(run.op_name, run.key, record.budget))

    # -- events ------------------------------------------------------------------------

    def _on_message(self, message: tuple[float, list[Any]]) -> None:
        _, payload = message
        if payload[0] == STORE:
            self._event_log.store_serialized(payload[1])
            record = self._by_step.get(payload[2]) if payload[2] is not None else None
            if record is not None and record.run.state is AttemptState.WAITING:
                self._began(record)  # its STEP_START is on its way to storage
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
        if record is None or record.run.state is AttemptState.WITHDRAWN:
            return  # an attempt already given up on; its entries were written anyway
        if kind == BEGAN:
            record.worker = payload[2]
            return
        if kind == END:
            if payload[2] is not None:
                record.end_error = record.end_error or dg.deserialize_value(payload[2])
            record.ended.set()
            return
        event = dg.deserialize_value(payload[2], DagsterEvent)
        if record.run.state is AttemptState.WAITING:
            self._began(record)  # its first event: STEP_START
        if event.is_step_success or event.is_step_failure or event.is_step_up_for_retry:
            record.terminal.set()
        if event.is_resource_init_failure:
            record.end_error = event.engine_event_data.error
        if event.is_step_up_for_retry:
            record.retry = event
            return
        record.accept(event)
