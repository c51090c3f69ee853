"""What a worker's session sets up in its process to run the run's steps on the loop of
its plan context, many in flight at once, as the run's own loop does: the bridge
between that loop and the steps' threads, the hosts for async and sync steps, Python
log records routed to the step that logged them, and each step's own stdout/stderr
capture."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from contextlib import contextmanager

from dagloop.dagster._internals import PlanExecutionContext
from dagloop.dagster.compute_logs import open_for_run
from dagloop.dagster.dask.run_spec import RunSpec
from dagloop.dagster.python_logs import route_python_logs
from dagloop.dagster.step_hosting import StepHosting
from dagloop.dagster.step_run import LoopBridge


@contextmanager
def worker_step_hosting(
    context: PlanExecutionContext, spec: RunSpec, thread_left: Callable[[int], None]
) -> Iterator[StepHosting]:
    """Host steps on `context.event_loop` (made this thread's loop) until the block ends."""
    loop = context.event_loop
    asyncio.set_event_loop(loop)
    bridge = LoopBridge(loop)
    bridge.install()
    hosting = StepHosting(
        loop,
        sync_threads=spec.sync_threads,
        host_threads=spec.host_threads,
        thread_left=thread_left,
    )
    unroute_python_logs = route_python_logs(context)
    try:
        with open_for_run(context, spec.compute_logs) as step_logs:
            hosting.step_logs = step_logs
            yield hosting
    finally:
        unroute_python_logs()
        bridge.uninstall()
        hosting.shutdown()
