"""What runs inside a Dask worker process: one step of a run, through Dagster's own
one-step plan execution (as the multiprocess executor's child processes do).

The Dask task is a coroutine, so it runs on the worker's event loop and only waits;
the step itself runs in one of the process's step threads (Dagster's step machinery
is synchronous and would otherwise stall the worker's heartbeats). An async op runs
on the private event loop Dagster creates for its step, so many async steps wait at
once inside one worker. Each event is stored in the run's event log by the worker's
own instance, as in a multiprocess child, and sent to the orchestrator through the
Dask scheduler's event topics (`Worker.log_event` → `Client.subscribe_topic`); the
last message of a step is an end marker carrying the number of events sent.
"""

from __future__ import annotations

import asyncio
import ctypes
import threading
from collections import OrderedDict
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    DagsterExecutionInterruptedError,
    ExecuteRunWithPlanIterable,
    ExecutionPlan,
    KnownExecutionState,
    PlanExecutionContext,
    PlanExecutionContextManager,
    ReconstructableJob,
    ResolvedRunConfig,
    RetryMode,
    create_execution_plan,
    dagster_event_sequence_for_step,
    trigger_hooks,
)


@dataclass(frozen=True)
class StepCommand:
    """Everything a worker needs to run one step of a run (pickled to the worker)."""

    topic: str
    token: str
    step_key: str
    run_config: dict[str, Any]
    dagster_run: dg.DagsterRun
    instance_ref: Any  # InstanceRef
    recon_job: ReconstructableJob
    retry_mode: RetryMode
    known_state: KnownExecutionState | None
    repository_load_data: Any
    step_threads: int


STEP_THREAD_PREFIX = "dagloop-dask-step"

#: The event loop Dagster created for the step running in each step thread.
_step_loops: dict[int, asyncio.AbstractEventLoop] = {}


class _StepLoopPolicy(asyncio.AbstractEventLoopPolicy):
    """Delegates to the process's policy and notes the loop Dagster creates for each
    step (`asyncio.new_event_loop()` in its plan context) so that a termination can
    stop an async op at its current await."""

    def __init__(self, inner: asyncio.AbstractEventLoopPolicy) -> None:
        self._inner = inner

    def get_event_loop(self) -> asyncio.AbstractEventLoop:
        return self._inner.get_event_loop()

    def set_event_loop(self, loop: asyncio.AbstractEventLoop | None) -> None:
        self._inner.set_event_loop(loop)

    def new_event_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._inner.new_event_loop()
        if threading.current_thread().name.startswith(STEP_THREAD_PREFIX):
            _step_loops[threading.get_ident()] = loop
        return loop

    def get_child_watcher(self) -> Any:
        return self._inner.get_child_watcher()

    def set_child_watcher(self, watcher: Any) -> None:
        self._inner.set_child_watcher(watcher)


def _raise_interrupted() -> None:
    # A BaseException raised by a loop callback leaves `run_until_complete`, as a
    # KeyboardInterrupt does; Dagster reports the step failed by an interrupt.
    raise DagsterExecutionInterruptedError()


@dataclass
class _StepThread:
    ident: int | None = None
    done: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)

    def interrupt(self) -> None:
        """Raise DagsterExecutionInterruptedError in the step: at the await an async op
        is parked at, else at the next Python bytecode its thread runs (a sync op
        blocked in C code sees it when that call returns)."""
        with self.lock:
            if self.ident is None or self.done:
                return
            loop = _step_loops.get(self.ident)
            if loop is not None and loop.is_running():
                loop.call_soon_threadsafe(_raise_interrupted)
            else:
                ctypes.pythonapi.PyThreadState_SetAsyncExc(
                    ctypes.c_ulong(self.ident), ctypes.py_object(DagsterExecutionInterruptedError)
                )


_pool_lock = threading.Lock()
_pool: ThreadPoolExecutor | None = None
_instances: dict[str, dg.DagsterInstance] = {}


def _step_pool(size: int) -> ThreadPoolExecutor:
    global _pool
    with _pool_lock:
        if _pool is None:
            policy = asyncio.get_event_loop_policy()
            if not isinstance(policy, _StepLoopPolicy):
                asyncio.set_event_loop_policy(_StepLoopPolicy(policy))
            _pool = ThreadPoolExecutor(max_workers=size, thread_name_prefix=STEP_THREAD_PREFIX)
        return _pool


def _instance(ref: Any) -> dg.DagsterInstance:
    """One instance per worker process and instance ref (opening one costs ~ms)."""
    key = dg.serialize_value(ref)
    with _pool_lock:
        instance = _instances.get(key)
        if instance is None:
            instance = dg.DagsterInstance.from_ref(ref)
            # Every log manager Dagster creates (one per step plan) calls
            # `logging.config.dictConfig` for the instance's python_logs handlers. Run in
            # step threads, that deadlocks against other steps' handlers emitting events
            # (logging's module lock vs. a handler's lock), so resolve them once here.
            handlers = list(instance.get_yaml_python_handlers())
            instance.get_yaml_python_handlers = lambda: handlers  # type: ignore[method-assign]
            _instances[key] = instance
        return instance


#: Resolved plans of the whole job, by run and dynamic mappings (few distinct per run).
_plans: OrderedDict[tuple[str, str], tuple[ExecutionPlan, Any, Any]] = OrderedDict()
_PLANS_KEPT = 8


def _one_step_plan_for(command: StepCommand) -> ExecutionPlan:
    """The plan `create_execution_plan(step_keys_to_execute=[key], known_state=...)`
    returns, without rebuilding the whole job's plan for every step (O(steps) each).

    The full plan depends on the known state only through its dynamic mappings, so it is
    built once per run and set of mappings; each step takes its subset and its own known
    state (ready outputs, retry attempts)."""
    known = command.known_state
    mappings = dg.serialize_value(known.dynamic_mappings) if known is not None else ""
    key = (command.dagster_run.run_id, mappings)
    with _pool_lock:
        cached = _plans.get(key)
        if cached is not None:
            _plans.move_to_end(key)
    if cached is None:
        full = create_execution_plan(
            job=command.recon_job,
            run_config=command.run_config,
            known_state=known,
            repository_load_data=command.repository_load_data,
        )
        job_def = command.recon_job.get_definition()
        cached = (full, job_def, ResolvedRunConfig.build(job_def, command.run_config))
        with _pool_lock:
            _plans[key] = cached
            while len(_plans) > _PLANS_KEPT:
                _plans.popitem(last=False)
    full, job_def, resolved = cached
    subset = full.build_subset_plan([command.step_key], job_def, resolved)
    return subset._replace(known_state=known or KnownExecutionState())


def _run_step_in_thread(command: StepCommand, state: _StepThread, worker: Any) -> None:
    sent = 0
    with state.lock:
        state.ident = threading.get_ident()
        _step_loops.pop(state.ident, None)
    try:
        instance = _instance(command.instance_ref)
        plan = _one_step_plan_for(command)
        job = command.recon_job.with_repository_load_data(plan.repository_load_data)
        for event in ExecuteRunWithPlanIterable(
            execution_plan=plan,
            iterator=_one_step_plan,
            execution_context_manager=PlanExecutionContextManager(
                job=job,
                execution_plan=plan,
                run_config=command.run_config,
                dagster_run=command.dagster_run,
                instance=instance,
                retry_mode=command.retry_mode.for_inner_plan(),
            ),
        ):
            worker.log_event(command.topic, [command.token, dg.serialize_value(event)])
            sent += 1
    except DagsterExecutionInterruptedError:
        pass  # Dagster reported the step failed (interrupted) before re-raising.
    finally:
        with state.lock:
            state.done = True
            _step_loops.pop(threading.get_ident(), None)
        worker.log_event(command.topic, [command.token, None, sent])


def _one_step_plan(
    job_context: PlanExecutionContext, execution_plan: ExecutionPlan
) -> Iterator[DagsterEvent]:
    """Dagster's `inner_plan_execution_iterator` (what `execute_plan_iterator` runs, as
    in a multiprocess child) without its compute-log capture: that redirects the
    process's stdout/stderr file descriptors and starts a `tail` process per plan, which
    is slow and wrong with many steps in one process. Op output printed on a worker goes
    to the worker's own stdout/stderr."""
    with execution_plan.start(
        retry_mode=job_context.retry_mode,
        step_dependency_config=job_context.step_dependency_config,
    ) as active:
        while not active.is_complete:
            step = active.get_next_step()
            yield from active.concurrency_event_iterator(job_context)
            if not step:
                active.sleep_til_ready()
                continue
            step_context = job_context.for_step(step, active.get_known_state())
            events: list[DagsterEvent] = []
            for event in dagster_event_sequence_for_step(step_context):
                events.append(event)
                yield event
                active.handle_event(event)
            active.verify_complete(job_context, step.key)
            for event in active.plan_events_iterator(job_context):
                events.append(event)
                yield event
            yield from trigger_hooks(step_context, events)


async def run_step(command: StepCommand) -> None:
    """The Dask task: hand the step to a step thread and wait for it without blocking."""
    from distributed import get_worker

    worker = get_worker()  # `Worker.log_event` is thread-safe
    state = _StepThread()
    loop = asyncio.get_running_loop()
    done = loop.run_in_executor(
        _step_pool(command.step_threads), _run_step_in_thread, command, state, worker
    )
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        state.interrupt()
        raise
