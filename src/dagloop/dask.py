"""Send chosen nodes of the standalone engine to a Dask cluster and await them natively.

    from dagloop.dask import DaskBackend, on_cluster

    @on_cluster
    def crunch(chunk: list[float]) -> float:  # sync, CPU-bound: runs in a worker process
        ...

    async with DaskBackend(processes=2):
        result = await AsyncDAGExecutor(dag, ...).execute()

A node marked with `on_cluster` is an `async def` to the engine: awaiting it submits the
function to the cluster with the asynchronous Dask client of the running loop and awaits
the Dask future, so the loop keeps running every other node meanwhile. Its arguments and
result are pickled (cloudpickle) to and from the worker. The engine's options still
apply: a timeout or a cancellation cancels the Dask future (a function already running
in a worker thread finishes there; its result is dropped), and a retry submits again.

Which backend a call uses: the one passed to `on_cluster(fn, backend=...)`, else the
innermost `async with DaskBackend(...)` around the execution. Needs the `dask` extra.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from typing import Any, ParamSpec, TypeVar

from .engine.errors import ConfigError
from .engine.tasks import Task
from .runtime.dask_client import dask_client

P = ParamSpec("P")
R = TypeVar("R")

_current: contextvars.ContextVar[DaskBackend] = contextvars.ContextVar("dagloop_dask_backend")


class DaskBackend:
    """A Dask cluster for the standalone engine: an existing scheduler (`address`) or a
    local cluster of `processes` worker processes started on entry and closed on exit.

    Use as `async with DaskBackend(...)` on the loop the engine runs on (the asynchronous
    Dask client lives on that loop).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        processes: int | None = None,
        threads_per_worker: int = 1,
    ) -> None:
        if (address is None) == (processes is None):
            raise ConfigError("DaskBackend needs exactly one of address= and processes=")
        if processes is not None and (not isinstance(processes, int) or processes < 1):
            raise ConfigError(f"processes= must be a positive integer, got {processes!r}")
        if not isinstance(threads_per_worker, int) or threads_per_worker < 1:
            raise ConfigError(
                f"threads_per_worker= must be a positive integer, got {threads_per_worker!r}"
            )
        self.address = address
        self.processes = processes
        self.threads_per_worker = threads_per_worker
        self._stack: AsyncExitStack | None = None
        self._client: Any = None
        self._token: contextvars.Token[DaskBackend] | None = None

    @property
    def client(self) -> Any:
        """The asynchronous `distributed.Client` (only inside `async with`)."""
        if self._client is None:
            raise RuntimeError("DaskBackend is not open; use it as `async with DaskBackend(...)`")
        return self._client

    async def __aenter__(self) -> DaskBackend:
        # A failed entry leaves nothing open: dask_client cleans up after itself.
        stack = AsyncExitStack()
        self._client = await stack.enter_async_context(
            dask_client(
                address=self.address,
                processes=self.processes,
                threads_per_worker=self.threads_per_worker,
            )
        )
        self._stack = stack
        self._token = _current.set(self)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._token is not None:
            _current.reset(self._token)
            self._token = None
        self._client = None
        stack, self._stack = self._stack, None
        if stack is not None:
            await stack.aclose()

    async def run(self, fn: Callable[..., R], /, *args: Any, **kwargs: Any) -> R:
        """Run `fn(*args, **kwargs)` on the cluster and await its result."""
        future = self.client.submit(fn, *args, pure=False, **kwargs)
        try:
            result: R = await future
        except asyncio.CancelledError:
            # Don't leave the task queued on the cluster; a running one ends on its own.
            await asyncio.shield(self.client.cancel([future]))
            raise
        return result


def on_cluster(
    fn: Callable[P, R] | Task[P, R], *, backend: DaskBackend | None = None
) -> Callable[P, Awaitable[R]] | Task[P, Awaitable[R]]:
    """Mark a node to run on a Dask cluster; a `Task`'s options are kept."""
    if isinstance(fn, Task):
        remote = _remote(fn.fn, backend)
        return Task(remote, name=fn.name, timeout=fn.timeout, retry=fn.retry, when=fn.when)
    return _remote(fn, backend)


def _remote(fn: Callable[P, R], backend: DaskBackend | None) -> Callable[P, Awaitable[R]]:
    if asyncio.iscoroutinefunction(fn):
        raise ConfigError(
            f"on_cluster({getattr(fn, '__name__', fn)!r}): async functions already run "
            "on the loop; send sync (e.g. CPU-bound) functions to the cluster"
        )
    return _ClusterCall(fn, backend)


class _ClusterCall:
    """An async callable with `fn`'s name and signature (the engine binds upstream
    results and resources by parameter name) that runs `fn` on the cluster."""

    def __init__(self, fn: Callable[..., Any], backend: DaskBackend | None) -> None:
        self.__wrapped__ = fn
        self.__signature__ = inspect.signature(fn)
        self.__name__ = getattr(fn, "__name__", "on_cluster")
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__doc__ = getattr(fn, "__doc__", None)
        self._backend = backend

    async def __call__(self, *args: Any, **kwargs: Any) -> Any:
        backend = self._backend if self._backend is not None else _current.get(None)
        if backend is None:
            raise RuntimeError(
                f"node function {self.__name__!r} runs on a Dask cluster, but no DaskBackend "
                "is open: wrap the execution in `async with DaskBackend(...)` or pass "
                "on_cluster(fn, backend=...)"
            )
        return await backend.run(self.__wrapped__, *args, **kwargs)

    def __repr__(self) -> str:
        return f"on_cluster({self.__wrapped__!r})"
