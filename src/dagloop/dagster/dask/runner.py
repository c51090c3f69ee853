"""The run process's side of the Dask scale-out: hand steps to the workers' sessions and
take back their events, on the run's event loop.

Dask starts the workers (or the run joins an existing cluster) and opens the run's
session in each (`worker.open_session`); from then on each step travels over that
worker's channel (`links.py`), not as a Dask task, so no task scheduler runs it again.
An attempt begins when its worker says so (BEGAN), before any of the op's code runs: an
attempt whose worker is lost before that is sent to another worker; one lost after it
fails once (or retries, as its RetryPolicy says), naming the worker."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    ExecutionPlan,
    ExecutionStep,
    Executor,
    PlanExecutionContext,
    ReconstructableJob,
    discard_fenced_write_holds,
)
from dagloop.dagster.attempts import AttemptState
from dagloop.dagster.config import AsyncExecutorConfig
from dagloop.dagster.dask import messages as msg
from dagloop.dagster.dask.config import DaskConfig
from dagloop.dagster.dask.links import (
    InFlight,
    Link,
    Links,
    NoWorkersError,
    first_of,
    pool_of,
)
from dagloop.dagster.dask.loans import LoopLoans
from dagloop.dagster.dask.lost import (
    WorkerLostError,
    lost_workers_event,
    stored_openings_and_ends,
    wait_for_its_last_write,
)
from dagloop.dagster.dask.run_spec import StepCommand, run_spec, step_known_state
from dagloop.dagster.errors import StepTimeoutError
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.remote import RemoteAttempt, Where
from dagloop.dagster.step_run import choose_host
from dagloop.dagster.tags import step_budget, tagged_placement
from dagloop.runtime.dask_client import dask_client

#: What a local cluster's workers import before the run opens its session there.
WORKER_MODULES = ("dagster", "dagloop.dagster.dask.worker")
#: How long the run waits for a worker's answer to DISOWN (an unresponsive worker's
#: attempt is reported failed anyway), and then for an attempt's own end stored there.
DISOWN_ANSWER_SECONDS = 1.0
OWN_END_SECONDS = 10.0
#: A step on a worker fails at its budget there; the run process asks it to stop only
#: this much later (its own failure is on its way by then, on any sane cluster).
BUDGET_BACKSTOP_SECONDS = 1.0


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
        fail_run: Callable[[BaseException], None],
    ) -> None:
        """`fail_run` ends the run with an error: a local cluster that failed to start
        while the run's first steps ran."""
        job = job_context.job
        if not isinstance(job, ReconstructableJob):  # the executor's requirements say so first
            raise dg.DagsterUnmetExecutorRequirementsError(
                f"Job '{job_context.job_name}' is not reconstructable; steps cannot run on a "
                "Dask cluster. Load it with dg.reconstructable(...) or from a code location."
            )
        self._config = config
        self._job_context = job_context
        self._executor = executor
        self._grace = executor_config.termination_grace_seconds
        self._default_budget = executor_config.step_timeout_seconds
        topic = f"dagloop-{job_context.run_id}"
        self._spec = run_spec(topic, job, job_context, execution_plan, executor_config, config)
        self._links = Links(
            job_context,
            event_log,
            self._began,
            self._on_link_lost,
            heartbeat_timeout=config.heartbeat_timeout_seconds,
            end_lost_processes=config.processes is not None,
        )
        #: The run stops: no attempt is sent any more.
        self._halting = False
        self._stack: AsyncExitStack | None = None
        #: Opens a local cluster while the run's first steps run (None: opened, or
        #: connected to before the run began).
        self._opening: asyncio.Task[None] | None = None
        self._open_failed = False
        self._fail_run = fail_run
        self._emit: Callable[[DagsterEvent], None] = lambda event: None
        #: Workers this run lost (each reported once).
        self._lost: set[str] = set()
        #: Nothing is lent to the loop from a cluster that is up before the run begins.
        self._loans = LoopLoans(
            config.steps_on_loop_while_starting if config.processes is not None else 0
        )

    # -- lifecycle (on the run's loop) -------------------------------------------------

    @asynccontextmanager
    async def open(self, emit: Callable[[DagsterEvent], None]) -> AsyncIterator[None]:
        """Connect to the cluster at `address` (a wrong one fails the run before any
        step starts), or start a local cluster: that takes seconds, so steps placed on
        the run's loop start meanwhile and those placed on the cluster wait for it. The
        run's engine events say where its steps go and when the cluster is ready."""
        self._emit = emit
        emit(self._engine_event(f"Steps placed on the cluster run on {self.describe()}"))
        if self._config.processes is None:
            await self._open()
        else:
            self._opening = asyncio.create_task(self._open_while_running())
        try:
            yield
        finally:
            await self._stop_opening()
            stack, self._stack = self._stack, None
            if stack is not None:
                await stack.aclose()
            discard_fenced_write_holds(self._job_context.instance, self._job_context.run_id)

    async def _open(self) -> None:
        config = self._config
        asked = time.monotonic()
        # A failed opening leaves nothing open: each part cleans up after itself.
        async with AsyncExitStack() as stack:
            client = await stack.enter_async_context(
                dask_client(
                    address=config.address,
                    processes=config.processes,
                    threads_per_worker=1,
                    preload=WORKER_MODULES,
                    tls=config.tls,
                )
            )
            slots = config.steps_per_worker if config.processes is not None else None
            await self._links.open(client, self._spec, slots)
            stack.push_async_callback(self._links.aclose)
            self._stack = stack.pop_all()
        self._loans.close()
        self._emit(
            self._engine_event(
                f"The Dask cluster is ready: {self._links.count} worker(s) took the run "
                f"(their channels to {self._links.channel_address}), "
                f"{time.monotonic() - asked:.1f} s after it was asked for" + self._loans.describe()
            )
        )

    def _engine_event(self, message: str) -> DagsterEvent:
        return DagsterEvent.engine_event(self._job_context, message, EngineEventData())

    async def _open_while_running(self) -> None:
        try:
            await self._open()
        except Exception as error:  # the run ends with it; its waiting steps are withdrawn
            self._open_failed = True
            self._fail_run(error)
        finally:
            self._loans.close()

    async def _opened(self) -> bool:
        """Until the cluster is open; False: it will not be (it failed, or the run
        stops before it opened)."""
        opening = self._opening
        if opening is None:
            return True
        if not opening.done():
            await asyncio.wait([opening])
        return not opening.cancelled() and not self._open_failed

    async def _stop_opening(self) -> None:
        """Give up on a cluster still starting: it is closed as soon as its start ends
        (`dask_client`), so the run waits at most for that."""
        opening = self._opening
        if opening is not None and not opening.done():
            opening.cancel()
            await asyncio.wait([opening])

    def describe(self) -> str:
        if self._config.processes is not None:
            return f"a local Dask cluster of {self._config.processes} worker processes"
        return f"the Dask cluster at {self._config.address}"

    # -- RemoteSteps -------------------------------------------------------------------

    def accepts(self, step: ExecutionStep) -> bool:
        placement = self._config.placement_of(step.node_handle.name, step.key, step.tags)
        return placement == "cluster"

    def place(self, step: ExecutionStep) -> Where:
        if not self.accepts(step):
            return Where.LOOP
        if not self._loans.lending:
            return Where.REMOTE
        # An op tagged for the cluster may need what only a worker process gives it
        # (isolation from the run process, say): never lent.
        if tagged_placement(step.node_handle.name, step.key, step.tags) is not None:
            return Where.REMOTE
        # Put off rather than queued for the cluster: a place on the loop may free up
        # before the cluster is ready.
        return Where.LOOP if self._loans.lend(step.key) else Where.LATER

    def local_attempt_ended(self, step: ExecutionStep) -> None:
        self._loans.ended(step.key)

    def wake_when_placeable(self, wake: Callable[[], None]) -> None:
        self._loans.on_close = wake

    async def before_stopping(self) -> None:
        """The run stops: every worker begins nothing from now on, and each answers once
        every BEGAN it sent before is handled here. An attempt that has not begun by
        then never does (the orchestrator withdraws it); a worker that does not answer
        in time has its unanswered attempts counted as begun, so they are stopped."""
        self._halting = True
        await self._stop_opening()
        for link in await self._links.halt(self._grace):
            for record in list(link.in_flight.values()):
                self._began(record)

    async def execute(self, attempt: RemoteAttempt) -> None:
        run, accept = attempt.run, attempt.accept
        budget = step_budget(run.op_name, run.key, run.step.tags)
        record = InFlight(
            run=run,
            accept=accept,
            known_state=attempt.known_state,
            budget=budget if budget is not None else self._default_budget,
            pool=pool_of(choose_host(run.context, self._spec.step_host)),
        )
        try:
            try:
                await self._run_to_end(record)
            except asyncio.CancelledError:
                if run.cancel_reason is None:
                    # Withdrawn before it began, or the orchestrator itself is torn
                    # down: a step that began is stopped too.
                    if record.link is not None and run.attempt.begun:
                        record.link.channel.send((msg.STOP, run.attempt.token, msg.INTERRUPT))
                    raise
                task = asyncio.current_task()
                if task is not None:
                    task.uncancel()
                await self._stop(record, attempt.fail)
                return
            except NoWorkersError as error:
                self._fail_unsent(record, error)
                return
            self._after_end(record)
        finally:
            if record.link is not None:
                self._links.release(record)
            if record.backstop is not None:
                record.backstop.cancel()
            if record.retry is not None:
                accept(record.retry)

    # -- one attempt -------------------------------------------------------------------

    async def _run_to_end(self, record: InFlight) -> None:
        """Send the attempt to a worker with a free slot and wait for its end. An attempt
        whose worker was lost before it began never ran there: it is sent again."""
        if not await self._opened():
            await asyncio.Future()  # no cluster: the run stops, this attempt is withdrawn
        while True:
            link = await self._links.free_link(record.pool)
            if self._halting:
                await asyncio.Future()  # the run stops: it is withdrawn next
            self._links.hold(record, link)
            self._send(record, link)
            await record.ended.wait()
            if record.lost is None or record.run.attempt.begun:
                return
            self._links.release(record)
            record.link, record.lost = None, None
            record.ended.clear()

    def _began(self, record: InFlight) -> None:
        """Its worker said it began (BEGAN), or the run stops and its worker did not
        answer: the attempt is begun; its budget's backstop starts."""
        if record.run.state is not AttemptState.WAITING or not record.run.begin():
            return
        if record.budget is not None:
            loop = asyncio.get_running_loop()
            record.backstop = loop.call_later(
                record.budget + BUDGET_BACKSTOP_SECONDS, self._over_budget, record
            )

    def _send(self, record: InFlight, link: Link) -> None:
        run, known_state = record.run, record.known_state
        mappings = known_state.dynamic_mappings
        size = sum(len(keys or ()) for outputs in mappings.values() for keys in outputs.values())
        if size != link.mappings_size:
            # Sent once each time they grew, not with every step: they are O(steps).
            link.channel.send((msg.MAPPINGS, dict(mappings)))
            link.mappings_size = size
        command = StepCommand(
            token=run.attempt.token,
            step_key=run.key,
            known_state=step_known_state(run.step, known_state),
            budget=record.budget,
        )
        link.channel.send((msg.STEP, command))

    def _after_end(self, record: InFlight) -> None:
        """The attempt's code ended on its worker (END), or its worker was lost."""
        if record.lost is not None:
            self._report_lost(record)
            return
        if record.terminal or record.end_error is None:
            return  # its end was reported, or the orchestrator tells Dagster it was not
        # It ends with an error, perhaps without having begun: its worker's resources
        # failed to open.
        self._began(record)
        # As the multiprocess executor does for a child whose step could not run.
        record.accept(
            self._executor.log_failure_or_retry_event_after_error(
                record.run.context, record.end_error, record.known_state
            )
        )

    def _fail_unsent(self, record: InFlight, error: BaseException) -> None:
        """No worker is left to run the attempt: it fails (or retries) with the error."""
        if not record.run.begin():
            return
        info = WorkerLostError.info("(none left)", record.run.key, str(error))
        record.accept(
            self._executor.log_failure_or_retry_event_after_error(
                record.run.context, info, record.known_state
            )
        )

    async def _on_link_lost(self, link: Link, cause: str) -> None:
        """A worker's channel closed before the run ended: every attempt it held that
        has not ended is lost with it; those that began fail (or retry), the others are
        sent elsewhere. With `events_written_by: workers`, what the worker stored says
        which began and which ended."""
        if self._spec.events_written_by == "workers":
            await wait_for_its_last_write(self._job_context, link.worker)
        open_records = [record for record in link.in_flight.values() if not record.ended.is_set()]
        if self._spec.events_written_by == "workers":
            self._settle_from_storage(open_records)
        begun = [
            record for record in open_records if record.run.attempt.begun and not record.terminal
        ]
        if link.worker not in self._lost and begun:
            self._lost.add(link.worker)
            steps = sorted(record.run.key for record in begun)
            begun[0].accept(lost_workers_event(self._job_context, link.worker, steps, cause))
        for record in open_records:
            record.lost = cause
            record.ended.set()

    def _settle_from_storage(self, records: list[InFlight]) -> None:
        """A lost worker stored its steps' entries itself, and may have stored an
        attempt's STEP_START, or even its end, without the run process hearing of it.
        An attempt whose STEP_START is stored began (though none of its op's code ran):
        it must not run again. One whose terminal event is stored ended with it."""
        keys = {record.run.key for record in records}
        openings, ends = stored_openings_and_ends(self._job_context, keys)
        for record in records:
            key = record.run.key
            earlier = record.known_state.previous_retry_attempts.get(key, 0)
            if openings[key] <= earlier:
                continue  # it never began: it is sent again
            self._began(record)
            end = ends.get(key)
            if openings[key] == earlier + 1 and end is not None and not record.terminal:
                record.reported.set()
                if end.is_step_up_for_retry:
                    record.retry = end
                else:
                    record.accept(end)

    def _report_lost(self, record: InFlight) -> None:
        """One failure (or retry, as the step's RetryPolicy says) for an attempt whose
        worker was lost while it ran."""
        if record.terminal:
            return  # it ended before its worker was lost
        assert record.link is not None
        error = WorkerLostError.info(record.link.worker, record.run.key, record.lost)
        record.accept(
            self._executor.log_failure_or_retry_event_after_error(
                record.run.context, error, record.known_state
            )
        )

    async def _stop(self, record: InFlight, fail: Callable[[BaseException], None]) -> None:
        """The run asked a begun attempt to stop: its worker interrupts it; one that
        has not reported its end `grace` seconds later is reported failed here, once its
        worker disowned it (or its own end, stored there meanwhile, arrives instead)."""
        run = record.run
        reason = run.cancel_reason
        assert reason is not None
        if record.link is not None:
            kind = msg.TIMEOUT if isinstance(reason, StepTimeoutError) else msg.INTERRUPT
            record.link.channel.send((msg.STOP, run.attempt.token, kind))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(record.ended.wait(), self._grace)
        if not record.ended.is_set() and not record.terminal and not await self._disowned(record):
            # Its own end is stored on its worker: it is on its way here.
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OWN_END_SECONDS):
                    await first_of(record.reported, record.ended)
        if record.ended.is_set():
            self._after_end(record)
        if not record.terminal:
            fail(reason)  # nothing if a failure was reported on its behalf just now

    async def _disowned(self, record: InFlight) -> bool:
        """Before the run reports the failure of an attempt that did not stop: whether
        its worker disowned it, so that what its code logs when it returns at last is
        not stored (with `events_written_by: workers` it is stored there, past the run's
        attempt table). True also when the worker does not answer."""
        link = record.link
        if link is None:
            return True
        record.disowned = asyncio.get_running_loop().create_future()
        link.channel.send((msg.DISOWN, record.run.attempt.token))
        try:
            async with asyncio.timeout(DISOWN_ANSWER_SECONDS):
                await first_of(record.disowned, record.ended)
        except TimeoutError:
            return True
        return not record.disowned.done() or record.disowned.result()

    def _over_budget(self, record: InFlight) -> None:
        """The attempt's worker did not report its end at its budget: stop it from here."""
        run = record.run
        assert record.budget is not None
        if not record.terminal and not record.ended.is_set():
            run.cancel(StepTimeoutError(run.op_name, run.key, record.budget))
