"""`Pipeline`: `@task` functions whose dependencies are their parameter names.

    @task
    def download(): ...

    @task
    async def normalize(download): ...

    result = Pipeline(tasks=[download, normalize]).execute()

A parameter named after another task receives its return value (and makes an edge);
a parameter named after a resource receives the resource.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from typing import Any

from .binding import ExtraSlots, SpecFactory, bind_by_name, result_of, unwrap
from .errors import ConfigError, DuplicateNodeError, SelfLoopError, TaskBindingError
from .executor import AsyncDAGExecutor, split_options
from .graph import DAG
from .results import ExecutionResult
from .sync_facade import run_sync
from .tasks import Task


class Pipeline:
    """A graph inferred from parameter names. `options` are `AsyncDAGExecutor` options."""

    def __init__(
        self, tasks: Sequence[Callable[..., Any]], *, name: str = "pipeline", **options: Any
    ) -> None:
        executor_options, execute_options = split_options(options, "Pipeline()")
        if execute_options:
            raise ConfigError(
                f"{', '.join(sorted(execute_options))} belongs to execute(), not Pipeline()"
            )
        if isinstance(tasks, str) or not isinstance(tasks, Sequence):
            raise ConfigError(f"Pipeline(tasks=...) takes a list of functions, got {tasks!r}")
        self.name = name
        entries: dict[str, tuple[Callable[..., Any], Task[..., Any] | None]] = {}
        for item in tasks:
            fn, options_of = unwrap(item, repr(item))
            task_name = options_of.name if options_of else getattr(fn, "__name__", None)
            if not task_name or task_name == "<lambda>":
                raise TaskBindingError(
                    f"pipeline task {fn!r} has no usable name; wrap it as task(fn, name=...)"
                )
            if task_name in entries:
                raise DuplicateNodeError(task_name)
            entries[task_name] = (fn, options_of)
        resources = executor_options.get("resources") or {}
        for clash in sorted(set(entries) & set(resources)):
            raise ConfigError(
                f"{clash!r} is both a task and a resource of the pipeline; rename one of them"
            )
        builder = DAG.builder()
        for task_name in entries:
            builder.add_node(task_name, when=None)
        for task_name, (fn, _) in entries.items():
            for param in _parameter_names(fn):
                if param == task_name:
                    raise SelfLoopError(task_name)
                if param in entries:
                    builder.add_edge(param, task_name)
        self.dag = builder.build()
        self._executor = AsyncDAGExecutor(self.dag, **executor_options)
        self._extras = ExtraSlots()
        names = self.dag._names
        factory = SpecFactory(self._executor.retries)
        self._specs = []
        for index, task_name in enumerate(names):
            fn, options_of = entries[task_name]
            upstream = {names[p]: result_of(p) for p in self.dag._preds[index]}
            kwargs = bind_by_name(task_name, fn, upstream, self._executor.resources, self._extras)
            self._specs.append(factory.make(fn, options_of, (), kwargs))

    async def execute_async(
        self, *, timeout: float | None = None, cancel_event: Any = None
    ) -> ExecutionResult:
        return await self._executor.run_compiled(
            self._specs, self._extras, timeout=timeout, cancel_event=cancel_event
        )

    def execute(self, *, timeout: float | None = None, cancel_event: Any = None) -> ExecutionResult:
        result: ExecutionResult = run_sync(
            self.execute_async(timeout=timeout, cancel_event=cancel_event)
        )
        return result

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r} tasks={self.dag.node_count()}>"


def _parameter_names(fn: Callable[..., Any]) -> list[str]:
    try:
        parameters = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return []
    return [p.name for p in parameters if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
