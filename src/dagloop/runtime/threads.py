"""A bounded pool of worker threads that the event loop awaits natively.

Both the engine (sync callables) and the Dagster executor (steps whose compute
function is synchronous) run blocking work here so it never stalls the loop.

The threads are daemon threads, started lazily. `concurrent.futures.ThreadPoolExecutor`
is not used on purpose: the interpreter joins its threads at exit, so one call stuck in
C code (a socket read, a 600 s `time.sleep`) would keep a finished process alive. Here
a straggler that was given up on never delays the process's exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import functools
import queue
import threading
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

P = ParamSpec("P")
T = TypeVar("T")

_Work = tuple[Callable[[], Any], "concurrent.futures.Future[Any]"]


class WorkerThreads:
    """`await pool.run(fn, *args)` runs `fn` in one of at most `max_workers` threads.

    Cancelling the awaiting task does not stop the thread (see
    `dagloop.runtime.thread_interrupt` for that); the result is discarded and `busy`
    keeps counting it until it returns, so callers can tell whether stragglers are left.
    """

    def __init__(self, max_workers: int, name: str = "dagloop-worker") -> None:
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be a positive integer, got {max_workers!r}")
        self.max_workers = max_workers
        self._name = name
        self._work: queue.SimpleQueue[_Work | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._idle = 0
        self._busy = 0
        self._closed = False

    @property
    def busy(self) -> int:
        """Number of calls currently executing or queued in the threads."""
        return self._busy

    async def run(self, fn: Callable[P, T], /, *args: P.args, **kwargs: P.kwargs) -> T:
        ctx = contextvars.copy_context()
        call = functools.partial(ctx.run, fn, *args, **kwargs)
        future: concurrent.futures.Future[T] = concurrent.futures.Future()
        with self._lock:
            if self._closed:
                raise RuntimeError(f"worker threads '{self._name}' were shut down")
            self._busy += 1
            self._spawn_if_needed()
        # Runs when the call returns, raises, or is cancelled before it started.
        future.add_done_callback(self._release)
        self._work.put((call, future))
        return await asyncio.wrap_future(future)

    def shutdown(self, wait: bool = True) -> None:
        """Stop taking work; calls not yet started are cancelled. With `wait`, join the
        threads (a call still running is waited for)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            threads = list(self._threads)
        while True:
            try:
                item = self._work.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[1].cancel()
        for _ in threads:
            self._work.put(None)
        if wait:
            for thread in threads:
                if thread is not threading.current_thread():
                    thread.join()

    def _release(self, _: object) -> None:
        with self._lock:
            self._busy -= 1

    def _spawn_if_needed(self) -> None:
        # Called with the lock held. A new thread only when none is idle for this call.
        if self._idle > 0:
            self._idle -= 1
            return
        if len(self._threads) >= self.max_workers:
            return
        thread = threading.Thread(
            target=self._worker, name=f"{self._name}_{len(self._threads)}", daemon=True
        )
        self._threads.append(thread)
        thread.start()

    def _worker(self) -> None:
        while True:
            item = self._work.get()
            if item is None:
                return
            call, future = item
            if future.set_running_or_notify_cancel():
                try:
                    result = call()
                except BaseException as exc:
                    future.set_exception(exc)
                else:
                    future.set_result(result)
                del call, future, item  # drop references before idling
            with self._lock:
                if self._closed:
                    return
                self._idle += 1
