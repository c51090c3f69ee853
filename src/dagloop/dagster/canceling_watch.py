"""Whether the run was marked CANCELING (the UI's Terminate, `dagster run terminate`),
read in a thread of its own.

Reading the run's status is a storage round trip (on PostgreSQL a new connection, its
authentication included): on the run's loop, every step it runs would stall for it a few
times a second."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable

import dagster as dg

from dagloop.dagster._internals import PlanExecutionContext
from dagloop.runtime.threads import WorkerThreads

#: How often the run's status is read for CANCELING.
CANCEL_POLL_SECONDS = 0.5
#: The name of the thread that reads it.
READER_THREAD = "dagloop-run-status"


class CancelingWatch:
    """Reads the run's status until it is CANCELING; used on the run's loop. Its thread
    only reads: a failed read is logged on the loop, inside the run (a thread that logs
    through the run's loggers after the run ended could deadlock with the next run's
    logging set-up)."""

    def __init__(self, job_context: PlanExecutionContext) -> None:
        self._job_context = job_context
        self._failures = 0

    @contextlib.asynccontextmanager
    async def watching(self, on_canceling: Callable[[], None]) -> AsyncIterator[None]:
        """`watch` in a task of its own while the block runs."""
        task = asyncio.create_task(self.watch(on_canceling))
        try:
            yield
        finally:
            task.cancel()
            await asyncio.wait([task])

    async def watch(self, on_canceling: Callable[[], None]) -> None:
        """Read the status now and every CANCEL_POLL_SECONDS, until it is CANCELING (then
        call `on_canceling`, on the loop) or this is cancelled (a read under way then
        ends in its thread, unheeded)."""
        reader = WorkerThreads(1, name=READER_THREAD)
        try:
            while True:
                try:
                    status = await reader.run(self._status)
                except Exception as exc:
                    canceling = self._answer(error=exc)
                else:
                    canceling = self._answer(status)
                if canceling:
                    break
                await asyncio.sleep(CANCEL_POLL_SECONDS)
            on_canceling()
        finally:
            reader.shutdown(wait=False)

    def is_canceling(self) -> bool:
        """One look at the run's status, here and now (blocking)."""
        try:
            status = self._status()
        except Exception as exc:
            return self._answer(error=exc)
        return self._answer(status)

    def _status(self) -> dg.DagsterRunStatus | None:
        context = self._job_context
        run = context.instance.get_run_by_id(context.run_id)
        return None if run is None else run.status

    def _answer(
        self, status: dg.DagsterRunStatus | None = None, error: Exception | None = None
    ) -> bool:
        """Whether a read found the run CANCELING. A storage error is no answer this
        time: it is logged once, and the next look retries."""
        if error is None:
            self._failures = 0
            return status == dg.DagsterRunStatus.CANCELING
        self._failures += 1
        if self._failures == 1:
            with contextlib.suppress(Exception):
                self._job_context.log.warning(
                    "dagloop async executor: reading the run's status failed "
                    f"({error!r}); retrying every {CANCEL_POLL_SECONDS:g} s"
                )
        return False
