"""One attempt of a node recorded as a trace span: where it ran, when, and how it ended."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..runtime.threads import WorkerThreads
from ..runtime.tracing import LOOP, TraceRecorder
from .binding import CallSpec


@dataclass(slots=True)
class ThreadRun:
    """Filled in by the worker thread that runs a sync call, so the span shows that
    thread and the call's own timing rather than the loop's wait for it.

    The thread sets `start_ns` after the thread's name and id, and `end_ns` last, so a
    reader that sees `start_ns` set also sees where it ran.
    """

    thread_name: str = ""
    thread_id: int = 0
    start_ns: int | None = None
    end_ns: int | None = None


async def traced_call(
    tracer: TraceRecorder,
    pool: WorkerThreads,
    name: str,
    attempt: int,
    spec: CallSpec,
    args: list[Any],
    kwargs: dict[str, Any],
) -> Any:
    """Call `spec.fn` as `_attempt` would and record one span for it, whatever the end."""
    loop_thread = threading.current_thread()
    where, thread_id = LOOP, loop_thread.ident or 0
    start = time.perf_counter_ns()
    in_thread = ThreadRun()
    status, error = "completed", None
    try:
        if spec.is_async:
            return await spec.fn(*args, **kwargs)
        value = await pool.run(_timed_call, in_thread, spec.fn, args, kwargs)
        if asyncio.iscoroutine(value):
            value = await value
        return value
    except BaseException as exc:
        status, error = (
            ("cancelled" if isinstance(exc, asyncio.CancelledError) else "failed"),
            exc,
        )
        raise
    finally:
        end = time.perf_counter_ns()
        if in_thread.start_ns is not None:
            where, thread_id, start = in_thread.thread_name, in_thread.thread_id, in_thread.start_ns
            if in_thread.end_ns is not None:
                end = in_thread.end_ns
        tracer.record(
            name,
            attempt,
            start,
            end,
            status=status,
            where=where,
            thread_id=thread_id,
            error=error,
        )


def _timed_call(
    record: ThreadRun, fn: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> Any:
    """Runs in the worker thread so the trace shows the thread and its own timing."""
    current = threading.current_thread()
    record.thread_name = current.name
    record.thread_id = current.ident or 0
    record.start_ns = time.perf_counter_ns()
    try:
        return fn(*args, **kwargs)
    finally:
        record.end_ns = time.perf_counter_ns()
