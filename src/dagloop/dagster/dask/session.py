"""One run's presence in one Dask worker process: its resources, its event loop, and
its channel to the run process.

The run process opens a `RunSession` in every worker when the run starts
(`worker.open_session`). The session's thread builds the run's plan and opens Dagster's
`PlanExecutionContext` once, so the run's resources are initialised once per worker
process and shared by every step of the run that worker hosts. The thread then runs that
context's event loop, on which the steps run as in the single-process executor: async
steps in greenlets (their awaits overlap), sync steps and steps with user IO managers in
worker threads. The channel lives on the Dask worker's own event loop, so Dagster's
synchronous bookkeeping never delays the worker's heartbeats. When the run ends (or its
process is gone), the session stops what still runs and tears the resources down.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import sys
import threading
from collections.abc import Callable
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    DagsterExecutionInterruptedError,
    PlanExecutionContext,
    PlanExecutionContextManager,
    encode_entry,
    serializable_error_info_from_exc_info,
    share_scoped_resources,
)
from dagloop.dagster.attempts import OPENING_EVENT_TYPES, AttemptState, AttemptTable
from dagloop.dagster.dask import messages as msg
from dagloop.dagster.dask.channel import Outbox
from dagloop.dagster.dask.lease import Lease
from dagloop.dagster.dask.run_spec import RunSpec, StepCommand
from dagloop.dagster.dask.worker_hosting import worker_step_hosting
from dagloop.dagster.dask.worker_plan import WorkerPlan, plan_context
from dagloop.dagster.entry_routes import QuarantinedThreads, route_entries, unroute_entries
from dagloop.dagster.errors import StepTimeoutError
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.step_hosting import StepHosting, blocked_loop_warning
from dagloop.dagster.step_run import StepRun, choose_host
from dagloop.dagster.streaming import ProducerTurns, streams_outputs
from dagloop.runtime.greenbridge import await_

#: How often an interrupt for a step that has not begun yet (it waits for a thread) is
#: tried again.
INTERRUPT_RETRY_SECONDS = 0.01
#: When the run ends, how long the session waits for steps it still hosts to stop
#: (the run process has reported each of them ended by then).
STOP_WAIT_SECONDS = 1.0


class RunSession:
    def __init__(
        self,
        spec: RunSpec,
        instance: dg.DagsterInstance,
        outbox: Outbox,
        hello: tuple[Any, ...],
        lease: Lease,
    ) -> None:
        self.spec = spec
        self._lease = lease
        self._instance = instance
        self._outbox = outbox
        #: The first message: where the session is and what it takes.
        self._hello = hello
        #: Resolves once resources were torn down and the loop closed.
        self.closed: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._open_error: Any = None  # SerializableErrorInfo
        self._context: PlanExecutionContext | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._hosting: StepHosting | None = None
        self._event_log: RunEventLog | None = None
        #: Where the steps sent here are found (once the run's context is open).
        self._plan: WorkerPlan | None = None
        self._runs: dict[int, StepRun] = {}
        #: Interrupts asked for before their step was here, by token.
        self._interrupts: dict[int, str] = {}
        #: An attempt's events are stored only while the run process cannot have taken
        #: this worker as lost (`events_written_by: workers`).
        self._attempts: AttemptTable[StepRun] = AttemptTable(fence=lease.wait)
        #: What arrived before the loop ran (nothing is sent before HELLO, but a CLOSE).
        self._early: list[Any] = []
        self._lock = threading.Lock()
        #: `events_written_by: run`: threads of disowned attempts, whose entries are
        #: dropped; the entries stay routed here until the last of them leaves.
        self._quarantined = QuarantinedThreads(
            lambda: unroute_entries(self._instance, self.spec.dagster_run.run_id)
        )
        self._closing = False
        #: The run process reports every attempt here (`_lost`): none may begin.
        self._owns_nothing = False
        #: The run stops: no step begins here any more.
        self._halted = False
        #: Attempts whose BEGAN is sent.
        self._began: set[int] = set()
        self._stopped: asyncio.Future[None] | None = None
        self._thread = threading.Thread(
            target=self._main,
            name=f"dagloop-dask-run-{spec.dagster_run.run_id[:8]}",
            daemon=True,
        )

    def start(self) -> None:
        self._thread.start()

    # -- from the channel (the Dask worker's loop) -------------------------------------

    def deliver(self, batch: list[Any]) -> None:
        """Messages from the run process, in order; handled on the session's loop, but
        DISOWN at once."""
        for message in batch:
            if message[0] == msg.DISOWN:
                self._disown(message[1])
            elif message[0] == msg.LOST:
                self._lost()
        with self._lock:
            loop = self._loop
            if loop is None:
                self._early.extend(batch)
                return
        with contextlib.suppress(RuntimeError):  # its loop is closed: the session is over
            loop.call_soon_threadsafe(self._handle, batch)

    def _disown(self, token: int) -> None:
        """Answer DISOWN: the run process reports the attempt's end unless its own is
        stored here already; from now on its own end is not stored (nor sent)."""
        run = self._runs.get(token)
        # An attempt no longer here ended: its END follows its entries to the run.
        disowned = run is not None and self._disown_attempt(run)
        self._outbox.send((msg.DISOWNED, token, disowned))

    def _disown_attempt(self, run: StepRun) -> bool:
        """True: no end of the attempt was stored here, and none will be."""
        if not self._attempts.disown(run.attempt):
            return False
        # As on the run's loop: nothing its thread logs from now on is stored, even once
        # the session is over (the entries stay routed until the thread leaves).
        run.section.while_inside(self._held().add)
        return True

    def _held(self) -> QuarantinedThreads:
        """Threads of disowned attempts: the worker's event log's (`workers`), else the
        session's own (`run`: it routes the entries to the run process)."""
        return self._event_log.quarantined if self._event_log is not None else self._quarantined

    def _lost(self) -> None:
        """The run process reports every attempt here failed (or none, if its process
        is gone): none stores its own end, and an end waiting for the lease is dropped."""
        with self._lock:
            self._owns_nothing = True
            runs = list(self._runs.values())
        for run in runs:
            self._disown_attempt(run)
        self._lease.end()

    def run_process_gone(self) -> None:
        """The channel closed: the run is over, its process is gone, or it took this
        worker as lost (it may not have read LOST). Stop."""
        self._lost()
        self.deliver([(msg.CLOSE,)])

    # -- the session's thread ----------------------------------------------------------

    def _main(self) -> None:
        if self.spec.events_written_by == "run":
            # The run process writes them (see dagster/event_log/).
            route_entries(self._instance, self.spec.dagster_run.run_id, self._send_entry)
        try:
            manager = plan_context(self.spec, self._instance)
            for event in manager.prepare_context():
                if event.is_resource_init_failure and self._open_error is None:
                    self._open_error = event.engine_event_data.error
            context = manager.get_context()
        except BaseException:
            self._open_error = serializable_error_info_from_exc_info(sys.exc_info())
            self._serve_without_context()
            return
        if context is None:  # Dagster reported the failure as events
            self._close_context(manager, after=self._serve_without_context)
            return
        self._context = context
        self._plan = WorkerPlan(context.execution_plan)
        # As on the run's loop: every step context shares the resources opened here.
        share_scoped_resources(context)
        try:
            with worker_step_hosting(context, self.spec, self._thread_left) as hosting:
                self._hosting = hosting
                context.event_loop.run_until_complete(self._serve(context.event_loop))
        finally:
            self._close_context(manager)

    def _serve_without_context(self) -> None:
        """The resources failed to open: every step sent here ends with that error."""
        loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._serve(loop))
        finally:
            loop.close()
            self._finish()

    async def _serve(self, loop: asyncio.AbstractEventLoop) -> None:
        self._stopped = stopped = loop.create_future()
        if self._context is not None and self.spec.events_written_by == "workers":
            self._event_log = RunEventLog(
                self._instance,
                self.spec.dagster_run.run_id,
                loop,
                on_failure=lambda failure: self._outbox.send((msg.WRITE_FAILED, str(failure))),
                attempts=self._attempts,
                fence=self._lease.wait,
            )
            self._event_log.start()
        self._outbox.send(self._hello)
        with self._lock:
            self._loop = loop
            early, self._early = self._early, []
        self._handle(early)
        await stopped
        if self._event_log is not None:
            await self._event_log.aclose()

    def _close_context(
        self, manager: PlanExecutionContextManager, after: Callable[[], None] | None = None
    ) -> None:
        """Tear the resources down (their events go to the run's event log) and close
        the loop; the loop no longer runs, so async teardowns run to completion here."""
        try:
            for _ in manager.shutdown_context():
                pass
        except BaseException as exc:
            self.closed.set_exception(exc)
        if after is not None:
            after()
        else:
            self._finish()

    def _thread_left(self, thread_id: int) -> None:
        """A worker thread's step code returned: what it logs next is not the step's."""
        self._held().release(thread_id)

    def _finish(self) -> None:
        if self.spec.events_written_by == "run":
            # (`workers`: the session's event log routed them, and unroutes them once
            # no thread of a disowned attempt is left.)
            self._quarantined.close()
        self._outbox.send((msg.CLOSED,))
        if not self.closed.done():
            self.closed.set_result(None)

    def _send_entry(self, entry: Any) -> None:
        """Every entry of the run logged in this process (any thread), encoded as the row
        the run process inserts."""
        if threading.get_ident() in self._quarantined:
            return
        self._outbox.send((msg.ENTRY, encode_entry(self._instance.event_log_storage, entry)))

    # -- on the session's loop ---------------------------------------------------------

    def _handle(self, batch: list[Any]) -> None:
        for message in batch:
            kind = message[0]
            if kind == msg.STEP:
                if self._closing or self._halted:
                    continue  # sent before the run stopped: it never begins
                command: StepCommand = message[1]
                asyncio.get_running_loop().create_task(
                    self._execute(command), name=f"dagloop-step:{command.step_key}"
                )
            elif kind == msg.MAPPINGS:
                if self._plan is not None:
                    self._plan.mappings_received(message[1])
            elif kind == msg.STOP:
                self._interrupts.setdefault(message[1], message[2])
                self._interrupt(message[1])
            elif kind == msg.HALT:
                self._halted = True
                asyncio.get_running_loop().create_task(self._halt())
            elif kind == msg.CLOSE and not self._closing:
                self._closing = True
                asyncio.get_running_loop().create_task(self._stop())

    def _send_after_written(self, message: Any) -> None:
        """`message` reaches the run process after every entry logged before it: in
        order on the channel, or once the worker's own event log stored them."""
        if self._event_log is None:
            self._outbox.send(message)
        else:
            self._event_log.after_written(lambda: self._outbox.send(message))

    async def _halt(self) -> None:
        """Withdraw every step that has not begun; answer HALTED once each step that
        did begin has sent its BEGAN (it is between its begin and its STEP_START)."""
        for run in list(self._runs.values()):
            run.withdraw()
        while any(
            run.attempt.begun and token not in self._began for token, run in self._runs.items()
        ):
            await asyncio.sleep(INTERRUPT_RETRY_SECONDS)
        self._outbox.send((msg.HALTED,))

    def _opened(self, run: StepRun, token: int) -> None:
        """Where the step's code runs, right after its STEP_START: wait until the run
        process is sure to learn that it began (its BEGAN is handed to the connection,
        after the STEP_START's entry) before any of the op's code runs. A worker lost
        before that point never ran the op: the run process sends the step elsewhere."""
        loop = self._loop
        assert loop is not None
        if self._event_log is not None:  # its STEP_START is stored here, first
            barrier = self._event_log.barrier()
            if run.in_thread:
                asyncio.run_coroutine_threadsafe(barrier, loop).result()
            else:
                await_(barrier)
        written: concurrent.futures.Future[None] = concurrent.futures.Future()
        self._outbox.send((msg.BEGAN, token), written)
        self._began.add(token)
        if run.in_thread:
            written.result()
        else:
            await_(asyncio.wrap_future(written))

    async def _execute(self, command: StepCommand) -> None:
        token = command.token
        if self._halted:
            return  # sent before the run stopped: it never begins
        if self._context is None or self._hosting is None or self._plan is None:
            error = self._open_error
            self._outbox.send((msg.END, token, dg.serialize_value(error) if error else None))
            return
        run: StepRun | None = None
        budget = command.budget
        escaped: Any = None  # SerializableErrorInfo
        turns: ProducerTurns | None = None

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
            self._send_after_written((msg.EVENT, token, event))
            if (
                turns is not None
                and run is not None
                and event.event_type == dg.DagsterEventType.HANDLED_OUTPUT
                and turns.due()
            ):
                run.yield_to_loop = not run.in_thread

        try:
            step = self._plan.step(command.step_key)
            dependencies = self.spec.step_dependency_config
            every_producer = not dependencies.require_upstream_step_success
            if streams_outputs(step, every_producer=every_producer):
                turns = ProducerTurns(asyncio.get_running_loop())
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
            run.on_opening = functools.partial(self._opened, run, token)
            with self._lock:
                if self._owns_nothing:
                    return  # the run reports its failure: it never begins
                self._runs[token] = run
            if token in self._interrupts:  # asked before the step was here
                self._interrupt(token)
            await self._hosting.run_step(run, accept)
            if self._hosting.has_hooks(run):
                await self._hosting.run_hooks(run, accept)
        except BaseException:
            # Dagster reported the step's end before re-raising an interrupt or its
            # timeout; if not, the run process reports it failed with this error.
            escaped = serializable_error_info_from_exc_info(sys.exc_info())
        finally:
            self._runs.pop(token, None)
            self._interrupts.pop(token, None)
            self._began.discard(token)
            if run is not None and run.deadline_timer is not None:
                run.deadline_timer.cancel()
            self._send_after_written(
                (msg.END, token, dg.serialize_value(escaped) if escaped is not None else None)
            )

    def _interrupt(self, token: int) -> None:
        run = self._runs.get(token)
        if run is None:
            return  # not here yet: `_execute` applies it when it is
        if run.state is AttemptState.WAITING:
            # The run counts it as begun: stopped once it has (it waits for a thread).
            loop = asyncio.get_running_loop()
            loop.call_later(INTERRUPT_RETRY_SECONDS, self._interrupt, token)
            return
        kind = self._interrupts.pop(token, None)
        if kind is None:
            return
        budget = run.budget
        if kind == msg.TIMEOUT and budget is not None:
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
        """The run ends: stop the steps still here (the run process has reported each of
        them ended by now, or is gone), then let the thread tear the resources down."""
        for run in list(self._runs.values()):
            if not run.withdraw():
                run.cancel(DagsterExecutionInterruptedError())
        tasks = [run.task for run in self._runs.values() if run.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=STOP_WAIT_SECONDS)
        assert self._stopped is not None
        self._stopped.set_result(None)
