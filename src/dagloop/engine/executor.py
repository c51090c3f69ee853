"""`AsyncDAGExecutor`: validates options and tasks, opens resources, runs the scheduler."""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Mapping, Sequence
from contextlib import AsyncExitStack
from typing import Any

from ..runtime.threads import WorkerThreads
from ..runtime.tracing import TraceRecorder
from .binding import (
    CallSpec,
    ExtraSlots,
    Source,
    SpecFactory,
    bind_by_name,
    result_of,
    takes_no_parameters,
    unwrap,
)
from .callbacks import ALL_EVENTS, CallbackDispatcher
from .errors import ConfigError, TaskBindingError, UnknownNodeError, did_you_mean
from .graph import DAG
from .progress import RichProgress
from .resources import open_resources, validate_resources
from .results import ExecutionResult
from .retry import RetryPolicy
from .scheduler import Scheduler
from .validation import optional_positive_int, optional_seconds, reject_unknown_keys

#: Keyword options of the executor constructors, for `invoke(**options)` and friends.
EXECUTOR_OPTIONS = (
    "max_concurrency",
    "max_workers",
    "costs",
    "callbacks",
    "fail_fast",
    "enable_tracing",
    "hooks",
    "retries",
    "progress",
    "resources",
)
#: Keyword options of `execute()`.
EXECUTE_OPTIONS = ("timeout", "cancel_event")


def default_max_workers() -> int:
    return min(32, (os.cpu_count() or 1) + 4)


class DAGExecutorBase:
    """What `AsyncDAGExecutor` and the synchronous `DAGExecutor` share: one constructor
    (so the two faces take the same options, in the same order, checked the same way)
    and the run itself, on the running event loop."""

    def __init__(
        self,
        dag: DAG,
        max_workers: int | None = None,
        costs: Mapping[str, float] | None = None,
        callbacks: object | Sequence[object] | None = None,
        fail_fast: bool = True,
        enable_tracing: bool = False,
        hooks: object | Sequence[object] | None = None,
        *,
        max_concurrency: int | None = None,
        retries: RetryPolicy | int | None = None,
        progress: bool = False,
        resources: Mapping[str, Any] | None = None,
        **unknown: Any,
    ) -> None:
        reject_unknown_keys(unknown, EXECUTOR_OPTIONS, f"{type(self).__name__}()", _EXECUTE_CALL)
        if not isinstance(dag, DAG):
            raise ConfigError(f"expected a DAG built with DAG.builder(), got {dag!r}")
        self.dag = dag
        self.max_concurrency = optional_positive_int(max_concurrency, "max_concurrency")
        self.max_workers = (
            optional_positive_int(max_workers, "max_workers") or default_max_workers()
        )
        self._priorities = dag.remaining_path_costs(costs) if costs is not None else None
        self.costs = dict(costs) if costs is not None else None
        self._listeners = [*_listeners(callbacks, "callbacks"), *_listeners(hooks, "hooks")]
        for flag, value in (
            ("fail_fast", fail_fast),
            ("enable_tracing", enable_tracing),
            ("progress", progress),
        ):
            if not isinstance(value, bool):
                raise ConfigError(f"{flag} must be True or False, got {value!r}")
        self.fail_fast = fail_fast
        self.enable_tracing = enable_tracing
        self.progress = progress
        self.retries = RetryPolicy.coerce(retries, "retries")
        self.resources = validate_resources(resources)

    def _reject_unknown_execute_options(self, unknown: Mapping[str, Any]) -> None:
        if unknown:
            constructor = dict.fromkeys(EXECUTOR_OPTIONS, f"{type(self).__name__}()")
            reject_unknown_keys(unknown, EXECUTE_OPTIONS, "execute()", constructor)

    async def _run_tasks(
        self, tasks: Mapping[str, Any], timeout: float | None, cancel_event: Any
    ) -> ExecutionResult:
        extras = ExtraSlots()
        specs = self.compile_mapping(tasks, extras)
        return await self.run_compiled(specs, extras, timeout=timeout, cancel_event=cancel_event)

    def compile_mapping(self, tasks: Mapping[str, Any], extras: ExtraSlots) -> list[CallSpec]:
        dag = self.dag
        if not isinstance(tasks, Mapping):
            raise ConfigError(f"tasks must be a mapping of node name -> callable, got {tasks!r}")
        for name in tasks:
            if name not in dag:
                raise UnknownNodeError(name, "tasks", dag.nodes)
        for name in self.resources:
            extras.resource(name)
        names = dag._names
        all_nodes = set(names)
        factory = SpecFactory(self.retries)
        specs: list[CallSpec] = []
        for index, name in enumerate(names):
            given = tasks.get(name)
            if given is None:
                raise TaskBindingError(_no_task_message(dag, name, tasks))
            fn, options = unwrap(given, name)
            if takes_no_parameters(fn):
                kwargs: tuple[tuple[str, Source], ...] = ()
            else:
                upstream = {names[p]: result_of(p) for p in dag._preds[index]}
                kwargs = bind_by_name(name, fn, upstream, self.resources, extras, all_nodes)
            specs.append(factory.make(fn, options, (), kwargs))
        return specs

    async def run_compiled(
        self,
        specs: list[CallSpec],
        extras: ExtraSlots,
        *,
        parameter: Any = None,
        timeout: float | None = None,
        cancel_event: Any = None,
        interrupt_on_failure: bool = False,
    ) -> ExecutionResult:
        timeout = optional_seconds(timeout, "timeout")
        if cancel_event is not None and not callable(getattr(cancel_event, "is_set", None)):
            raise ConfigError(
                f"cancel_event must be a threading.Event or an asyncio.Event, got {cancel_event!r}"
            )
        started = time.perf_counter()
        listeners = list(self._listeners)
        if self.progress:
            listeners.append(RichProgress())
        dispatcher = CallbackDispatcher(listeners)
        tracer = TraceRecorder() if self.enable_tracing else None
        pool = WorkerThreads(self.max_workers, name="dagloop-worker")
        try:
            async with AsyncExitStack() as stack:
                opened = await open_resources(self.resources, stack)
                resource_sources: dict[str, Source] = {
                    name: extras.resource(name) for name in self.resources
                }
                scheduler = Scheduler(
                    self.dag,
                    specs,
                    extras.resolve(opened, parameter),
                    resource_sources,
                    pool=pool,
                    callbacks=dispatcher,
                    fail_fast=self.fail_fast,
                    max_concurrency=self.max_concurrency,
                    priorities=self._priorities,
                    tracer=tracer,
                    timeout=timeout,
                    cancel_event=cancel_event,
                    interrupt_on_failure=interrupt_on_failure,
                )
                if dispatcher.execution_start:
                    dispatcher.emit(dispatcher.execution_start, self.dag.node_count())
                node_results = await scheduler.run()
                await dispatcher.drain()
        except BaseException:
            dispatcher.cancel_pending()
            raise
        finally:
            # Threads abandoned by a timeout finish on their own; do not block on them.
            pool.shutdown(wait=pool.busy == 0)
        result = ExecutionResult(
            {r.name: r for r in node_results},
            time.perf_counter() - started,
            tracer,
            dag=self.dag,
            parameter=parameter,
            failure_order=scheduler.failure_order,
        )
        if dispatcher.execution_end:
            dispatcher.emit(dispatcher.execution_end, result)
            await dispatcher.drain()
        return result


class AsyncDAGExecutor(DAGExecutorBase):
    """Runs a `DAG` on the running event loop.

    The first parameters are dagron's, in dagron's order (`AsyncDAGExecutor(dag, 4)`
    works); the others are keyword-only. An unknown keyword is a `ConfigError`.

    Args:
        dag: the graph.
        max_workers: threads for sync callables (default: min(32, CPUs + 4)).
        costs: cost hints by node name; ready nodes then start longest remaining
            critical path first. Names that are not nodes are ignored with a warning.
        callbacks: an object (or a list of objects) with `Callbacks` methods.
        fail_fast: stop at the first failure (True) or let independent branches finish.
        enable_tracing: record every attempt; the trace is `ExecutionResult.trace`.
        hooks: more listeners, like `callbacks` (dagron's name for plugins that
            observe a run).
        max_concurrency: most nodes running at once (async and sync together);
            None means no limit.
        retries: default `RetryPolicy`, or a number of retries, for nodes without one.
        progress: show a rich progress bar.
        resources: shared resources injected by parameter name (see `resources.py`).
    """

    async def execute(
        self,
        tasks: Mapping[str, Any],
        timeout: float | None = None,
        cancel_event: Any = None,
        **unknown: Any,
    ) -> ExecutionResult:
        """Run `tasks` (node name -> callable or `Task`) and wait for every node.

        A task receives, by parameter name, the results of its direct upstream nodes
        and the shared resources it asks for.
        """
        self._reject_unknown_execute_options(unknown)
        return await self._run_tasks(tasks, timeout, cancel_event)


_EXECUTE_CALL = dict.fromkeys(EXECUTE_OPTIONS, "execute()")


def _listeners(value: object | Sequence[object] | None, what: str) -> list[object]:
    """Callback objects, each checked to have at least one event method: an object
    with none (a misspelt method name, a dagron class dagloop does not know) would
    otherwise be silently ignored."""
    if value is None:
        return []
    listeners = list(value) if isinstance(value, list | tuple) else [value]
    for listener in listeners:
        if not any(callable(getattr(listener, event, None)) for event in ALL_EVENTS):
            names = [n for n in dir(listener) if n.startswith("on_")]
            hint = did_you_mean(names[0], ALL_EVENTS) if names else ""
            raise ConfigError(
                f"{what} object {listener!r} has none of the methods dagloop calls "
                f"({', '.join(ALL_EVENTS)})"
                + (f"; it has {names[0]!r}{hint}" if hint.startswith("; did you mean") else "")
            )
    return listeners


def _no_task_message(dag: DAG, name: str, tasks: Mapping[str, Any]) -> str:
    message = f"node {name!r} has no task; pass a callable for it"
    edge = dag._implicit.get(name)
    if edge is not None:
        message += (
            f" (the node was created by add_edge({edge[0]!r}, {edge[1]!r}); "
            "if that name is a typo, fix the edge)"
        )
    hint = did_you_mean(name, [n for n in tasks if isinstance(n, str)])
    if hint.startswith("; did you mean"):
        message += hint
    return message


def split_options(
    options: Mapping[str, Any], where: str, extra: Iterable[str] = ()
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Split `**options` into executor and execute options, rejecting unknown keys."""
    allowed = (*EXECUTOR_OPTIONS, *EXECUTE_OPTIONS, *extra)
    for key in options:
        if key not in allowed:
            raise ConfigError(f"unknown option {key!r} for {where}{did_you_mean(key, allowed)}")
    executor_options = {k: v for k, v in options.items() if k in EXECUTOR_OPTIONS}
    execute_options = {k: v for k, v in options.items() if k in EXECUTE_OPTIONS}
    return executor_options, execute_options
