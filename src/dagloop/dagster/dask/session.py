"""One run's presence in one Dask worker process: its resources and its event loop.

The first step of a run to reach a worker opens a `RunSession` there. The session's
thread builds the run's plan and opens Dagster's `PlanExecutionContext` for it once, so
the run's resources are initialised once per worker process and shared by every step
of the run that worker hosts. The thread then runs that context's event loop, on which
the steps run as in the single-process executor: async steps in greenlets (their
awaits overlap), sync steps and steps with user IO managers in worker threads. The
Dask worker's own event loop only waits for the session, so Dagster's synchronous
bookkeeping never delays the worker's heartbeats. The run's orchestrator closes the
session when the run ends, which tears the resources down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    DagsterExecutionInterruptedError,
    ExecutionStep,
    KnownExecutionState,
    PlanExecutionContext,
    PlanExecutionContextManager,
    ReconstructableJob,
    RetryMode,
    StepDependencyConfig,
    create_execution_plan,
    serializable_error_info_from_exc_info,
)
from dagloop.dagster.attempts import OPENING_EVENT_TYPES, AttemptState, AttemptTable
from dagloop.dagster.config import StepHost
from dagloop.dagster.dask.messages import END, EVENT, TIMEOUT
from dagloop.dagster.errors import StepTimeoutError
from dagloop.dagster.step_hosting import StepHosting, blocked_loop_warning
from dagloop.dagster.step_run import LoopBridge, StepRun, choose_host

_INTERRUPTS = (KeyboardInterrupt, DagsterExecutionInterruptedError)
#: How often an interrupt for a step that has not begun yet (it waits for a thread) is
#: tried again.
INTERRUPT_RETRY_SECONDS = 0.01
#: When the run ends, how long the session waits for steps it still hosts to stop
#: (the run process has reported each of them ended by then).
STOP_WAIT_SECONDS = 1.0


@dataclass(frozen=True)
class RunSpec:
    """What a worker needs to open a run's session (pickled with each step)."""

    topic: str
    run_config: dict[str, Any]
    dagster_run: dg.DagsterRun
    instance_ref: Any  # InstanceRef
    recon_job: ReconstructableJob
    retry_mode: RetryMode
    step_dependency_config: StepDependencyConfig
    step_keys_to_execute: list[str]
    known_state: KnownExecutionState | None
    repository_load_data: Any
    step_host: StepHost
    #: "run": the workers send their event-log entries to the run process to write;
    #: "workers": each worker writes them itself.
    events_written_by: str
    sync_threads: int
    host_threads: int
    blocked_loop_warning_seconds: float


@dataclass(frozen=True)
class StepCommand:
    """One attempt of one step, and the part of the run's known state its execution
    reads (ready inputs, its retry count, the parent run's state)."""

    #: The attempt's token in the run's `AttemptTable`: issued once per attempt.
    token: int
    step_key: str
    known_state: KnownExecutionState
    #: Its time budget in seconds (counted from its STEP_START here), None: none.
    budget: float | None = None
    #: Which submission of the attempt this is (claims.py): the run process submits
    #: an attempt again only if a lost worker had claimed it before its code began.
    submission: int = 0


#: Publishes one message on the run's Dask topic; callable from any thread.
Publish = Callable[[list[Any]], None]


class RunSession:
    def __init__(
        self,
        spec: RunSpec,
        open_instance: Callable[[Any], dg.DagsterInstance],
        publish: Publish,
    ) -> None:
        self.spec = spec
        self._open_instance = open_instance
        self._publish = publish
        #: Resolves once the context is open (or failed to open) and the loop runs.
        self.opened: concurrent.futures.Future[None] = concurrent.futures.Future()
        #: Resolves once resources were torn down and the loop closed.
        self.closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._open_error: Any = None  # SerializableErrorInfo
        self._context: PlanExecutionContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hosting: StepHosting | None = None
        self._runs: dict[int, StepRun] = {}
        #: Interrupts asked for (any thread), by token: applied once the step has begun.
        self._interrupts: dict[int, str] = {}
        self._interrupts_lock = threading.Lock()
        self._attempts: AttemptTable[StepRun] = AttemptTable()
        self._thread = threading.Thread(
            target=self._main,
            name=f"dagloop-dask-run-{spec.dagster_run.run_id[:8]}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    # -- the session's thread ----------------------------------------------------------

    def _main(self) -> None:
        spec = self.spec
        try:
            manager = self._context_manager()
            for event in manager.prepare_context():
                if event.is_resource_init_failure and self._open_error is None:
                    self._open_error = event.engine_event_data.error
            context = manager.get_context()
        except BaseException:
            self._open_error = serializable_error_info_from_exc_info(sys.exc_info())
            self.opened.set_result(None)
            self.closed.set_result(None)
            return
        if context is None:  # Dagster reported the failure as events
            self.opened.set_result(None)
            self._close_context(manager)
            return
        self._context = context
        loop = self._loop = context.event_loop
        asyncio.set_event_loop(loop)
        bridge = LoopBridge(loop)
        bridge.install()
        self._hosting = StepHosting(
            loop, sync_threads=spec.sync_threads, host_threads=spec.host_threads
        )
        try:
            loop.call_soon(self.opened.set_result, None)
            loop.run_forever()
        finally:
            bridge.uninstall()
            self._hosting.shutdown()
            self._close_context(manager)

    def _context_manager(self) -> PlanExecutionContextManager:
        spec = self.spec
        # The plan the orchestrator runs (same steps, same starting state), so that each
        # step's context resolves inputs, IO managers and versions as it would there.
        plan = create_execution_plan(
            job=spec.recon_job,
            run_config=spec.run_config,
            step_keys_to_execute=spec.step_keys_to_execute,
            known_state=spec.known_state,
            repository_load_data=spec.repository_load_data,
        )
        return PlanExecutionContextManager(
            job=spec.recon_job.with_repository_load_data(plan.repository_load_data),
            execution_plan=plan,
            run_config=spec.run_config,
            dagster_run=spec.dagster_run,
            instance=self._open_instance(spec.instance_ref),
            retry_mode=spec.retry_mode.for_inner_plan(),
            step_dependency_config=spec.step_dependency_config,
        )

    def _close_context(self, manager: PlanExecutionContextManager) -> None:
        """Tear the resources down (their events go to the run's event log) and close
        the loop; the loop no longer runs, so async teardowns run to completion here."""
        try:
            for _ in manager.shutdown_context():
                pass
        except BaseException as exc:
            self.closed.set_exception(exc)
        else:
            self.closed.set_result(None)

    # -- called from the Dask worker's loop --------------------------------------------

    def submit(self, command: StepCommand, mappings: Any) -> concurrent.futures.Future[None]:
        """Run one step attempt on the session's loop; its events and then its END
        message are published."""
        if self._loop is None:
            future: concurrent.futures.Future[None] = concurrent.futures.Future()
            self._publish_open_failure(command)
            future.set_result(None)
            return future
        return asyncio.run_coroutine_threadsafe(self._execute(command, mappings), self._loop)

    def interrupt(self, token: int, kind: str) -> None:
        """Stop a step (thread-safe) as the run's loop does: an async step at its
        current await, a sync step in the op's own code (`StepRun.cancel`). `kind`:
        messages.TIMEOUT (its budget ran out) or INTERRUPT. One that has not begun yet
        is stopped as soon as it begins. A step that does not stop is reported failed
        by the run process after its grace period."""
        with self._interrupts_lock:
            self._interrupts.setdefault(token, kind)
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._interrupt, token)

    def close(self) -> concurrent.futures.Future[None]:
        """Stop the loop once in-flight steps were interrupted, then tear resources down."""
        if self._loop is not None:  # called once: the session left the registry
            asyncio.run_coroutine_threadsafe(self._stop(), self._loop)
        return self.closed

    # -- on the session's loop ---------------------------------------------------------

    async def _execute(self, command: StepCommand, mappings: Any) -> None:
        assert self._context is not None and self._hosting is not None
        publish = self._publish
        run: StepRun | None = None
        budget = command.budget
        escaped: Any = None  # SerializableErrorInfo

        def accept(event: DagsterEvent) -> None:
            if (
                budget is not None
                and run is not None
                and run.deadline_timer is None
                and event.event_type_value in OPENING_EVENT_TYPES
            ):
                # Counted from its STEP_START here, as on the run's loop.
                loop = asyncio.get_running_loop()
                run.deadline_timer = loop.call_later(budget, self._expire, run, budget)
            publish([EVENT, command.token, dg.serialize_value(event)])

        try:
            step = self._step(command.step_key, mappings)
            context = self._context.for_step(step, command.known_state)
            run = StepRun(
                step=step,
                context=context,
                host=choose_host(context, self.spec.step_host),
                budget=budget,
                report_hold=lambda step, held: self._report_hold(step, held, accept),
                attempts=self._attempts,
            )
            run.task = asyncio.current_task()
            self._runs[command.token] = run
            if command.token in self._interrupts:  # asked before the step was here
                self._interrupt(command.token)
            await self._hosting.run_step(run, accept)
            if self._hosting.has_hooks(run):
                await self._hosting.run_hooks(run, accept)
        except BaseException:
            # Dagster reported the step's end before re-raising an interrupt or its
            # timeout; if not, the run process reports it failed with this error.
            escaped = serializable_error_info_from_exc_info(sys.exc_info())
        finally:
            self._runs.pop(command.token, None)
            with self._interrupts_lock:
                self._interrupts.pop(command.token, None)
            if run is not None and run.deadline_timer is not None:
                run.deadline_timer.cancel()
            publish([END, command.token, dg.serialize_value(escaped) if escaped else None])

    def _step(self, key: str, mappings: Any) -> ExecutionStep:
        """The step as the orchestrator's `ActiveExecution` resolved it: a step of a
        dynamic mapping appears once the session's plan is resolved with the mappings
        known when the step started (as `ActiveExecution` resolves its own plan)."""
        assert self._context is not None
        plan = self._context.execution_plan
        if key not in plan.step_dict_by_key:
            plan.resolve(mappings)
        return plan.get_executable_step_by_key(key)

    def _interrupt(self, token: int) -> None:
        run = self._runs.get(token)
        if run is None:
            return  # not here yet: `_execute` applies it when it is
        if run.state is AttemptState.WAITING:
            # Claimed, so it begins (the run counts it as begun): stopped once it has.
            loop = asyncio.get_running_loop()
            loop.call_later(INTERRUPT_RETRY_SECONDS, self._interrupt, token)
            return
        with self._interrupts_lock:
            kind = self._interrupts.pop(token, None)
        if kind is None:
            return
        budget = run.budget
        if kind == TIMEOUT and budget is not None:
            run.cancel(StepTimeoutError(run.op_name, run.key, budget))
        else:
            run.cancel(DagsterExecutionInterruptedError())

    def _expire(self, run: StepRun, budget: float) -> None:
        """A step's budget ran out: it fails with `StepTimeoutError`, as on the loop."""
        run.cancel(StepTimeoutError(run.op_name, run.key, budget))

    def _report_hold(
        self, run: StepRun, held: float, accept: Callable[[DagsterEvent], None]
    ) -> None:
        warning = blocked_loop_warning(run, held, self.spec.blocked_loop_warning_seconds)
        if warning is not None:
            accept(warning)

    async def _stop(self) -> None:
        for run in list(self._runs.values()):
            if not run.withdraw():
                run.cancel(DagsterExecutionInterruptedError())
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)
        asyncio.get_running_loop().stop()

    def _publish_open_failure(self, command: StepCommand) -> None:
        """The run's context failed to open here: each step placed on this worker ends
        with the error, and the orchestrator reports it as Dagster's multiprocess
        executor reports a child whose resources failed (failure or retry). The
        failure's own events are in the run's event log already."""
        error = self._open_error
        self._publish([END, command.token, dg.serialize_value(error) if error else None])
