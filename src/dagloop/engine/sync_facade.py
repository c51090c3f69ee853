"""`DAGExecutor`: the same engine for code that is not async.

Each `execute` runs the async core on a fresh event loop. Sync callables run in at most
`max_workers` threads; async callables are awaited on that loop (never returned as
un-awaited coroutines). Called from inside a running event loop (a notebook, an async
framework), it runs the loop in a helper thread instead of failing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping, Sequence
from typing import Any

from .executor import EXECUTE_OPTIONS, EXECUTOR_OPTIONS, AsyncDAGExecutor
from .graph import DAG
from .results import ExecutionResult
from .retry import RetryPolicy
from .validation import reject_unknown_keys


class DAGExecutor:
    """Synchronous facade over `AsyncDAGExecutor`; takes the same options, in the same
    order (`DAGExecutor(dag, 4)` gives 4 worker threads)."""

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
        reject_unknown_keys(
            unknown, EXECUTOR_OPTIONS, "DAGExecutor()", dict.fromkeys(EXECUTE_OPTIONS, "execute()")
        )
        self._core = AsyncDAGExecutor(
            dag,
            max_workers,
            costs,
            callbacks,
            fail_fast,
            enable_tracing,
            hooks,
            max_concurrency=max_concurrency,
            retries=retries,
            progress=progress,
            resources=resources,
        )

    @property
    def dag(self) -> DAG:
        return self._core.dag

    @property
    def max_workers(self) -> int:
        return self._core.max_workers

    def execute(
        self,
        tasks: Mapping[str, Any],
        timeout: float | None = None,
        cancel_event: Any = None,
        **unknown: Any,
    ) -> ExecutionResult:
        """Run `tasks` and block until every node has a terminal status."""
        if unknown:
            reject_unknown_keys(
                unknown,
                EXECUTE_OPTIONS,
                "execute()",
                dict.fromkeys(EXECUTOR_OPTIONS, "DAGExecutor()"),
            )
        result: ExecutionResult = run_sync(
            self._core.execute(tasks, timeout=timeout, cancel_event=cancel_event)
        )
        return result


def run_sync(coro: Any) -> Any:
    """Run `coro` to completion on a new event loop, from any thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    # A loop is already running in this thread: asyncio.run() would refuse, and blocking
    # it is unavoidable for a sync API, so run a private loop in a helper thread.
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["value"] = asyncio.run(coro)
        except BaseException as exc:
            outcome["error"] = exc

    helper = threading.Thread(target=target, name="dagloop-sync-facade")
    helper.start()
    helper.join()
    if "error" in outcome:
        raise outcome["error"]
    return outcome["value"]
