"""Running one node: its attempts, each under the node's own timeout, with the retry
policy's backoff awaited on the loop between them.

The runner decides nothing about the graph. It reports how the node's attempts ended
to `Readiness` (a fan-out to the scheduler, which expands it). After each attempt it
asks readiness whether the node is still wanted: the execution timeout or a stop may
have ended it meanwhile.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any, Protocol

from ..runtime.threads import WorkerThreads
from ..runtime.tracing import TraceRecorder
from .binding import ArgumentValues, CallSpec
from .callbacks import CallbackDispatcher
from .errors import NodeTimeoutError
from .node_run import NodeRun
from .readiness import Readiness
from .results import NodeStatus
from .tasks import FanOut
from .traced_call import traced_call


class NodeEnds(Protocol):
    """What the runner reports to the scheduler rather than to readiness."""

    def node_fanned_out(self, node: NodeRun, fan: FanOut) -> None:
        """The node returned `fan` and is still running as far as readiness knows."""

    def node_raised_fatal(self, node: NodeRun, error: BaseException) -> None:
        """It raised KeyboardInterrupt or SystemExit: the whole run must stop."""

    def task_finished(self, node: NodeRun) -> None:
        """The node's task is ending, whatever happened (also when it was cancelled)."""

    def is_aborting(self) -> bool:
        """True while `execute()` itself is being cancelled."""
        ...


@dataclass(eq=False, slots=True)
class AttemptRunner:
    """Calls nodes' functions: async ones on the loop, sync ones in worker threads."""

    _readiness: Readiness
    _ends: NodeEnds
    _values: ArgumentValues
    _pool: WorkerThreads
    _callbacks: CallbackDispatcher
    _tracer: TraceRecorder | None

    async def run(self, node: NodeRun) -> None:
        """The task body of `node`: attempt it until it succeeds or no retry is left or
        allowed, and report how it ended. Nothing is reported when the node already
        ended some other way, or `execute()` itself is being cancelled; the end of the
        task is reported whatever happens."""
        spec = node.spec
        readiness = self._readiness
        ends = self._ends
        try:
            while True:
                node.attempts += 1
                try:
                    if spec.bare_coroutine and self._tracer is None:
                        # Hot path, inlined: no arguments, no timeout, no tracing.
                        value = await spec.fn()
                    elif spec.timeout is None:
                        value = await self._attempt(node, spec)
                    else:
                        value = await self._attempt_with_timeout(node, spec, spec.timeout)
                except asyncio.CancelledError as exc:
                    if not readiness.is_running(node.index) or ends.is_aborting():
                        # We cancelled it: the execution timeout or a stop already ended
                        # the node, or execute() itself is cancelled.
                        return
                    # Anything else (user code raising it, or cancelling its own task)
                    # is a failure of this node; returning silently would leave it
                    # RUNNING.
                    error: BaseException = exc
                except Exception as exc:
                    error = exc
                except BaseException as exc:  # KeyboardInterrupt, SystemExit
                    ends.node_raised_fatal(node, exc)
                    return
                else:
                    if isinstance(value, FanOut):
                        if readiness.is_running(node.index):
                            ends.node_fanned_out(node, value)
                    else:
                        readiness.complete_if_running(node.index, value)
                    return
                if not readiness.is_running(node.index):
                    return
                retry = spec.retry
                if (
                    retry is not None
                    and readiness.stop_reason is None
                    and retry.should_retry(error, node.attempts)
                ):
                    delay = retry.wait_before(node.attempts + 1)
                    if self._callbacks.node_retry:
                        self._callbacks.emit(
                            self._callbacks.node_retry, node.name, node.attempts, error, delay
                        )
                    if delay > 0:
                        await asyncio.sleep(delay)
                    if readiness.is_running(node.index) and readiness.stop_reason is None:
                        continue
                    if not readiness.is_running(node.index):
                        return
                timed_out = isinstance(error, NodeTimeoutError)
                status = NodeStatus.TIMED_OUT if timed_out else NodeStatus.FAILED
                readiness.done(node.index, status, error=error)
                return
        finally:
            ends.task_finished(node)

    async def _attempt_with_timeout(self, node: NodeRun, spec: CallSpec, seconds: float) -> Any:
        scope = asyncio.timeout(seconds)
        try:
            async with scope:
                return await self._attempt(node, spec)
        except TimeoutError:
            # Only our own budget becomes a NodeTimeoutError; a TimeoutError the task
            # raised itself is kept as it is.
            if scope.expired():
                raise NodeTimeoutError(node.name, seconds, "node") from None
            raise

    async def _attempt(self, node: NodeRun, spec: CallSpec) -> Any:
        if spec.args or spec.kwargs:
            args, kwargs = self._values.call_arguments(spec)
        else:
            args = []
            kwargs = {}
        tracer = self._tracer
        if tracer is not None:
            return await traced_call(
                tracer, self._pool, node.name, node.attempts, spec, args, kwargs
            )
        if spec.is_async:
            return await spec.fn(*args, **kwargs)
        value = await self._pool.run(spec.fn, *args, **kwargs)
        if asyncio.iscoroutine(value):
            # A sync callable that returns a coroutine (a lambda around an async
            # function) gets it awaited on the loop, never dropped un-awaited.
            value = await value
        return value
