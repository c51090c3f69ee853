"""`DAGExecutor`: the same engine for code that is not async.

Each `execute` runs the async core on a fresh event loop. Sync callables run in at most
`max_workers` threads; async callables are awaited on that loop (never returned as
un-awaited coroutines). Called from inside a running event loop (a notebook, an async
framework), it runs the loop in a helper thread instead of failing.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

from .executor import DAGExecutorBase
from .results import ExecutionResult


class DAGExecutor(DAGExecutorBase):
    """Synchronous facade over `AsyncDAGExecutor`; takes the same options, in the same
    order (`DAGExecutor(dag, 4)` gives 4 worker threads)."""

    def execute(
        self,
        tasks: Mapping[str, Any],
        timeout: float | None = None,
        cancel_event: Any = None,
        **unknown: Any,
    ) -> ExecutionResult:
        """Run `tasks` and block until every node has a terminal status."""
        self._reject_unknown_execute_options(unknown)
        result: ExecutionResult = run_sync(self._run_tasks(tasks, timeout, cancel_event))
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
