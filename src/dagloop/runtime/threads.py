"""A bounded pool of worker threads that the event loop awaits natively.

Both the engine (sync callables) and the Dagster executor (steps whose compute
function is synchronous) run blocking work here so it never stalls the loop.
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")


class WorkerThreads:
    """`await pool.run(fn, *args)` runs `fn` in one of at most `max_workers` threads.

    Cancelling the awaiting task does not stop the thread (Python threads cannot be
    killed); the result is discarded and `busy` keeps counting it until it returns,
    so callers can tell whether stragglers are left.
    """

    def __init__(self, max_workers: int, name: str = "dagloop-worker") -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        self.max_workers = max_workers
        self._name = name
        self._pool: ThreadPoolExecutor | None = None
        self._busy = 0
        self._lock = threading.Lock()

    @property
    def busy(self) -> int:
        """Number of calls currently executing or queued in the threads."""
        return self._busy

    def _executor(self) -> ThreadPoolExecutor:
        # Created lazily: a graph with no sync work never starts a thread.
        if self._pool is None:
            self._pool = ThreadPoolExecutor(self.max_workers, thread_name_prefix=self._name)
        return self._pool

    def _release(self, _: object) -> None:
        with self._lock:
            self._busy -= 1

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        with self._lock:
            self._busy += 1
        try:
            future = self._executor().submit(call)
        except BaseException:
            self._release(None)
            raise
        # Runs when the call returns, raises, or is cancelled before it started.
        future.add_done_callback(self._release)
        return await asyncio.wrap_future(future)

    def shutdown(self, wait: bool = True) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=wait, cancel_futures=True)
            self._pool = None
