"""The async core: drives one run's `Readiness` on one asyncio event loop.

Readiness decides what is ready and what each end releases, skips or stops. This module
turns ready nodes into tasks while the concurrency limit allows, reports each task's end
back, expands fan-outs, and enforces the execution timeout and `cancel_event`. Every
state change happens on the loop thread, so nothing needs a lock. Sync callables run in
`WorkerThreads`; the loop awaits them like any coroutine.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any

from ..runtime.threads import WorkerThreads
from ..runtime.tracing import TraceRecorder
from .attempts import AttemptRunner
from .binding import ArgumentValues, CallSpec, Source, bind_child
from .callbacks import CallbackDispatcher
from .cancel_watch import watch_cancel_event
from .errors import TaskBindingError
from .graph import DAG
from .node_run import NodeRun
from .outcomes import OutcomeRecorder
from .readiness import Readiness
from .results import NodeResult, NodeStatus
from .task_cleanup import finish_node_tasks
from .tasks import FanOut, Task

#: Makes a node's task: `factory(coroutine, name=...)`.
TaskFactory = Callable[..., "asyncio.Task[None]"]


def _missing_task_factory(*args: Any, **kwargs: Any) -> asyncio.Task[None]:
    raise RuntimeError("Scheduler.run() binds the task factory before starting nodes")


if sys.version_info >= (3, 12):

    def _task_factory(loop: asyncio.AbstractEventLoop) -> TaskFactory:
        # Eager start: the node's coroutine runs at once, up to its first real
        # suspension, so a node that never suspends finishes without a trip through
        # the loop. A partial keeps a Python frame off every node's start.
        return functools.partial(asyncio.Task, loop=loop, eager_start=True)

else:

    def _task_factory(loop: asyncio.AbstractEventLoop) -> TaskFactory:
        return loop.create_task


class Scheduler:
    """One execution of a compiled graph. Not reusable: create one per `execute`."""

    def __init__(
        self,
        dag: DAG,
        specs: list[CallSpec],
        extras: list[Any],
        resource_sources: Mapping[str, Source],
        *,
        pool: WorkerThreads,
        callbacks: CallbackDispatcher,
        fail_fast: bool,
        max_concurrency: int | None,
        priorities: list[float] | None,
        tracer: TraceRecorder | None,
        timeout: float | None,
        cancel_event: Any,
        interrupt_on_failure: bool = False,
    ) -> None:
        self._names = dag._names
        self._preds = dag._preds
        self._node_predicates = dag._node_predicates
        self._edge_predicates = dag._edge_predicates
        self._resource_sources = resource_sources
        self._callbacks = callbacks
        self._limit = max_concurrency
        self._timeout = timeout
        self._cancel_event = cancel_event
        self._nodes = [NodeRun(i, name, specs[i]) for i, name in enumerate(self._names)]
        self._values = ArgumentValues([None] * len(self._nodes), extras)
        self._occupied = 0
        self._active: dict[int, asyncio.Task[None]] = {}
        self._new_task: TaskFactory = _missing_task_factory
        self._helper_tasks: list[asyncio.Task[Any]] = []
        self._fatal: BaseException | None = None
        self._aborting = False
        self._done: asyncio.Future[None] | None = None
        self._pumping = False
        # Most graphs have no predicates; then readiness skips the check entirely.
        has_predicates = bool(
            self._node_predicates
            or self._edge_predicates
            or any(spec.when is not None for spec in specs)
        )
        self._recorder = OutcomeRecorder(self._nodes, self._values, callbacks, timeout)
        self._readiness = Readiness(
            dag._preds,
            dag._succs,
            fail_fast=fail_fast,
            # Builder style (async-dag): at a fail-fast failure, running coroutines are
            # cancelled too, so `invoke` raises at once, as an asyncio.TaskGroup would.
            interrupt_on_failure=interrupt_on_failure,
            priorities=priorities,
            gate=self._predicates_allow if has_predicates else None,
            on_reported=self._recorder.reported,
            on_decided=self._recorder.decided,
            on_interrupt=self._cancel_running_tasks,
            on_all_settled=self._all_settled,
        )
        self._recorder.attach(self._readiness)
        self._runner = AttemptRunner(self._readiness, self, self._values, pool, callbacks, tracer)
        # Bound once: used at least once per node.
        self._pop_ready = self._readiness.pop_ready
        self._run_node = self._runner.run

    @property
    def failure_order(self) -> list[str]:
        """Names of FAILED and TIMED_OUT nodes, in the order they ended."""
        return self._recorder.failure_order

    async def run(self) -> list[NodeResult]:
        loop = asyncio.get_running_loop()
        self._new_task = _task_factory(loop)
        self._done = loop.create_future()
        readiness = self._readiness
        cleanups: list[Callable[[], object]] = []
        if self._timeout is not None:
            cleanups.append(loop.call_later(self._timeout, readiness.expire).cancel)
        if self._cancel_event is not None:
            stop_watching, watcher = watch_cancel_event(
                self._cancel_event, loop, self._on_cancel_event, readiness.is_active
            )
            if watcher is not None:
                # _unwind() awaits it after cancelling, so it cannot outlive execute().
                self._helper_tasks.append(watcher)
            cleanups.append(stop_watching)
        completed_normally = False
        try:
            readiness.prepare()
            self._pump()
            if readiness.is_active():
                await self._done
            completed_normally = True
        finally:
            for cleanup in cleanups:
                cleanup()
            await self._unwind(cancel=not completed_normally)
        if self._fatal is not None:
            raise self._fatal
        return list(self._nodes)

    # -- starting and ending nodes -----------------------------------------------------------

    def _predicates_allow(self, index: int) -> bool:
        if index >= len(self._names):
            # Fan-out children have no predicates: none names them, their specs have no
            # `when`.
            return True
        results = self._values.results
        preds = self._preds[index]
        if self._edge_predicates:
            for source in preds:
                edge_when = self._edge_predicates.get((source, index))
                if edge_when is not None and not edge_when(results[source]):
                    return False
        for when in (self._node_predicates.get(index), self._nodes[index].spec.when):
            if when is not None and not when({self._names[p]: results[p] for p in preds}):
                return False
        return True

    def _pump(self, finished: NodeRun | None = None) -> None:
        """Start ready nodes while the concurrency limit allows. With `finished`, first
        free the place of that node's task: as `task_finished` this runs once per node,
        and one call instead of two shows in the engine's per-node overhead."""
        if finished is not None:
            self._active.pop(finished.index, None)
            self._occupied -= 1
        if self._pumping:
            # A node that ran to completion eagerly inside `_start` lands here; the
            # outer loop below picks up whatever it made ready, without recursion.
            return
        limit = self._limit
        pop_ready = self._pop_ready
        nodes = self._nodes
        cancel_event = self._cancel_event
        self._pumping = True
        try:
            # After a stop nothing is ever ready, so pop_ready() ends the loop.
            while limit is None or self._occupied < limit:
                # Checked before every start, not once per pump: with eager tasks
                # (3.12+) a node that sets the event and returns without awaiting
                # finishes inside `_start`, and what it made ready is popped by this
                # same loop. Only runs that pass a cancel_event pay for the check.
                if cancel_event is not None and cancel_event.is_set():
                    self._readiness.stop("cancel_event")
                    break
                index = pop_ready()
                if index is None:
                    break
                self._start(nodes[index])
        finally:
            self._pumping = False

    def _start(self, node: NodeRun) -> None:
        node.started = time.perf_counter()
        self._occupied += 1
        if self._callbacks.node_start:
            self._callbacks.emit(self._callbacks.node_start, node.name)
        task = self._new_task(self._run_node(node), name=node.name)
        if not task.done():  # an eager task may already have finished (3.12+)
            self._active[node.index] = task

    # -- NodeEnds: what the attempt runner reports -------------------------------------

    def node_raised_fatal(self, node: NodeRun, error: BaseException) -> None:
        # Stop everything, then let execute() re-raise it after cleanup.
        self._fatal = error
        if self._readiness.is_running(node.index):
            self._readiness.abort(node.index, error)
        else:
            self._readiness.stop("fatal")

    #: The node's task is ending: free its place and start what is ready.
    task_finished = _pump

    def is_aborting(self) -> bool:
        return self._aborting

    def node_fanned_out(self, parent: NodeRun, fan: FanOut) -> None:
        fn: Callable[..., Any]
        options: Task[..., Any] | None
        if isinstance(fan.fn, Task):
            fn, options = fan.fn.fn, fan.fn
        else:
            fn, options = fan.fn, None
        try:
            make_spec = bind_child(parent.name, fn, options, self._resource_sources, parent.spec)
        except TaskBindingError as exc:
            self._readiness.done(parent.index, NodeStatus.FAILED, error=exc)
            return
        items = fan.items
        if items and self._callbacks.node_expand:
            self._callbacks.emit(self._callbacks.node_expand, parent.name, len(items))
        values = self._values
        for position, item in enumerate(items):
            spec = make_spec(values.add_extra(item))
            self._nodes.append(NodeRun(len(self._nodes), f"{parent.name}[{position}]", spec))
            values.results.append(None)
        self._readiness.fan_out(parent.index, len(items))

    # -- stopping -------------------------------------------------------------------------

    def _all_settled(self) -> None:
        if self._done is not None and not self._done.done():
            self._done.set_result(None)

    def _on_cancel_event(self) -> None:
        readiness = self._readiness
        if readiness.stop_reason is None and readiness.is_active():
            readiness.stop("cancel_event")

    def _cancel_running_tasks(self) -> None:
        """Readiness ended running nodes (execution timeout, KeyboardInterrupt, builder
        style failure): cancel their coroutines. Threads cannot be cancelled and are
        abandoned."""
        current = asyncio.current_task()
        for task in self._active.values():
            if task is not current:
                task.cancel()

    async def _unwind(self, *, cancel: bool) -> None:
        """Make sure no node task outlives the execution."""
        helpers = [t for t in self._helper_tasks if not t.done()]
        if helpers:
            await asyncio.wait(helpers)
        if cancel:
            self._aborting = True
        await finish_node_tasks(self._active.values(), cancel=cancel)
