"""One step in flight: where it is hosted, how it is cancelled, how its awaits reach
the loop."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextvars
import inspect
import signal
import threading
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import CodeType
from typing import Any, TypeVar

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    ExecutionStep,
    StepExecutionContext,
)
from dagloop.dagster.attempts import Attempt, AttemptState, AttemptTable
from dagloop.dagster.config import StepHost
from dagloop.runtime.greenbridge import await_, in_bridged_greenlet
from dagloop.runtime.loop_hold import HoldTimed
from dagloop.runtime.thread_interrupt import InterruptibleSection, exception_class

T = TypeVar("T")

_OVER = frozenset({AttemptState.CLOSED, AttemptState.ABANDONED})

#: How often a step's worker thread is looked at again for a safe point to interrupt it.
INTERRUPT_RETRY_SECONDS = 0.005

#: The step whose code is running (in its greenlet or worker thread), so that its
#: awaits are timed and cancelled with it.
_current_step: contextvars.ContextVar[StepRun] = contextvars.ContextVar("dagloop_current_step")


def _user_compute_fn(context: StepExecutionContext) -> Any:
    """The function the user wrote: the decorated function of an `@op`/`@asset`, or the
    compute function an `OpDefinition` was given directly."""
    compute_fn: Any = context.op_def.compute_fn
    return getattr(compute_fn, "decorated_fn", compute_fn)


def compute_is_async(context: StepExecutionContext) -> bool:
    """True when the op's compute function is `async def` (coroutine or async generator)."""
    fn = _user_compute_fn(context)
    return inspect.iscoroutinefunction(fn) or inspect.isasyncgenfunction(fn)


def op_entry_points(context: StepExecutionContext) -> tuple[CodeType, ...]:
    """The code objects of the op's own compute function: a synchronous step may be
    interrupted only inside them (and what they call), see runtime/thread_interrupt.py.
    A decorator's wrapper (`functools.wraps`) counts, and so does what it wraps."""
    codes: list[CodeType] = []
    fn: Any = _user_compute_fn(context)
    seen: set[int] = set()
    while fn is not None and id(fn) not in seen:
        seen.add(id(fn))
        code = getattr(fn, "__code__", None)
        if code is None and callable(fn):  # a callable object: its __call__
            code = getattr(type(fn).__call__, "__code__", None)
        if isinstance(code, CodeType):
            codes.append(code)
        fn = getattr(fn, "__wrapped__", None)
    return tuple(codes)


def uses_user_io_manager(context: StepExecutionContext) -> bool:
    """True when the step loads or stores through an IO/input manager that is not one
    of Dagster's own. Those are synchronous and often do network I/O (an upload, a
    query), so they must not run on the loop thread."""
    for key in context.required_resource_keys:
        resource = getattr(context.resources, key, None)
        if isinstance(resource, dg.IOManager | dg.InputManager) and not type(
            resource
        ).__module__.startswith("dagster."):
            return True
    return False


def choose_host(context: StepExecutionContext, configured: StepHost) -> StepHost | None:
    """Where a step's Dagster bookkeeping runs: None for a synchronous op (its whole step
    runs in a worker thread); for an async op, the configured host, except that a step
    using a user IO manager is moved off the loop to a worker thread (its coroutine
    still runs on the loop)."""
    if not compute_is_async(context):
        return None
    if configured == "greenlet" and uses_user_io_manager(context):
        return "thread"
    return configured


@dataclass(eq=False)
class StepRun:
    """What one step attempt runs with: its context, where it is hosted and the handles
    that stop it. Its state is its `attempt`'s, owned by the run's `AttemptTable`."""

    step: ExecutionStep
    context: StepExecutionContext
    host: StepHost | None  # None: a synchronous op, always in a worker thread
    budget: float | None
    report_hold: Callable[[StepRun, float], None]
    attempts: AttemptTable[StepRun] = field(repr=False)
    #: Runs on a remote host (Dask): it begins when its worker says it began there.
    remote: bool = False
    events: list[DagsterEvent] = field(default_factory=list)
    task: asyncio.Task[None] | None = None
    deadline_timer: asyncio.TimerHandle | None = None
    #: Set on the loop when this greenlet-hosted step's last event made other steps ready
    #: (a streamed DynamicOutput): the step lets the loop start them before it goes on,
    #: even if its own code never awaits.
    yield_to_loop: bool = False
    #: Called where its code runs, right after its opening event (STEP_START) and
    #: before anything else of the step: a Dask worker makes sure there that the run
    #: process knows the step began before any of the op's code runs.
    on_opening: Callable[[], None] | None = None
    attempt: Attempt = field(init=False)
    #: The stretch of a worker thread in which this step's code runs (thread-hosted).
    section: InterruptibleSection = field(init=False)
    _thread_awaits: set[concurrent.futures.Future[Any]] = field(default_factory=set)
    _inner_sigint: Any = None
    _outer_sigint: Any = None

    def __post_init__(self) -> None:
        entry_points = op_entry_points(self.context) if self.host is None else ()
        self.section = InterruptibleSection(entry_points)
        self.attempt = self.attempts.launch(self.step.key, self)

    @property
    def key(self) -> str:
        return self.step.key

    @property
    def in_thread(self) -> bool:
        return self.host != "greenlet"

    @property
    def op_name(self) -> str:
        return self.step.node_handle.name

    @property
    def state(self) -> AttemptState:
        return self.attempt.state

    @property
    def cancel_reason(self) -> BaseException | None:
        """Why the attempt was asked to stop (None: it was not)."""
        return self.attempt.stop_reason

    def begin(self) -> bool:
        """Called where the step's code is about to run (its greenlet or worker thread).
        False: it was withdrawn meanwhile and must not run."""
        return self.attempts.begin(self.attempt)

    def withdraw(self) -> bool:
        """Make sure a step whose code has not begun never begins. True if it was
        withdrawn: it ends without any event, as a step Dagster's executors never
        launched."""
        if not self.attempts.withdraw(self.attempt):
            return False
        if self.task is not None:
            self.task.cancel()
        return True

    def cancellation(self, _: BaseException) -> BaseException:
        """What a cancellation of this step's task becomes inside Dagster's step code."""
        assert self.cancel_reason is not None, "a step task is only cancelled through cancel()"
        return self.cancel_reason

    def cancel(self, reason: BaseException) -> bool:
        """Stop the step with `reason`: at its current await (async code), or at the next
        Python bytecode of its worker thread (sync code). False if it was not signalled
        (not begun, already over, or already stopped)."""
        if not self.attempt.begun or not self.attempts.stop(self.attempt, reason):
            return False
        if not self.in_thread:
            assert self.task is not None
            self.task.cancel()
            return True
        awaiting = list(self._thread_awaits)
        for future in awaiting:
            future.cancel()
        if not awaiting:
            # Not waiting for the loop: the thread runs synchronous code. The exception
            # is raised there, as Dagster raises an interrupt in the main thread, once
            # the thread runs the op's own code. A step whose thread has not entered its
            # section yet sees `cancel_reason` when it does.
            self.section.request_interrupt(exception_class(reason))
            self._keep_interrupting()
        return True

    def _keep_interrupting(self) -> None:
        """Deliver the interrupt once the thread runs the op's own code (never in
        Dagster's step machinery, a log call or a lock's plumbing); look again shortly."""
        task = self.task
        if self.state in _OVER or task is None or task.done():
            return
        if not self.section.try_interrupt():
            task.get_loop().call_later(INTERRUPT_RETRY_SECONDS, self._keep_interrupting)

    # -- greenlet switch hooks -------------------------------------------------------
    # Dagster swaps the SIGINT handler while user code runs (raise_execution_interrupts).
    # Greenlets interleave those swaps, so each step keeps its own handler and the
    # orchestrator's (capturing) handler is back in place whenever the loop runs.

    def entering(self) -> None:
        if threading.current_thread() is not threading.main_thread():
            return
        self._outer_sigint = signal.getsignal(signal.SIGINT)
        if self._inner_sigint is not None and self._inner_sigint is not self._outer_sigint:
            _install_interrupt_handler(self._inner_sigint)

    def leaving(self, held_seconds: float) -> None:
        # The greenlet's stretches are Dagster's own bookkeeping (inputs, outputs, event
        # log writes); loop stalls are attributed to user coroutines by `timed` instead.
        if threading.current_thread() is threading.main_thread():
            self._inner_sigint = signal.getsignal(signal.SIGINT)
            if self._inner_sigint is not self._outer_sigint and self._outer_sigint is not None:
                _install_interrupt_handler(self._outer_sigint)

    def timed(self, awaitable: Awaitable[T]) -> HoldTimed[T]:
        return HoldTimed(awaitable, lambda held: self.report_hold(self, held))

    def bind(self) -> None:
        """Mark the calling greenlet or thread (its own context) as running this step."""
        _current_step.set(self)

    # -- thread hosting --------------------------------------------------------------

    def await_from_thread(self, loop: asyncio.AbstractEventLoop, awaitable: Awaitable[T]) -> T:
        if self.cancel_reason is not None:
            raise self.cancel_reason

        async def run() -> T:
            return await self.timed(awaitable)

        future = asyncio.run_coroutine_threadsafe(run(), loop)
        self._thread_awaits.add(future)
        try:
            return future.result()
        except concurrent.futures.CancelledError:
            if self.cancel_reason is not None:
                raise self.cancel_reason from None
            raise
        finally:
            self._thread_awaits.discard(future)


def _install_interrupt_handler(handler: Any) -> None:
    # Dagster installs the same handler for SIGINT and SIGTERM (setup_interrupt_handlers).
    signal.signal(signal.SIGINT, handler)
    signal.signal(signal.SIGTERM, handler)


class LoopBridge:
    """Routes `event_loop.run_until_complete(x)` calls made by Dagster's step code.

    Dagster drives an async op with `context.event_loop.run_until_complete(...)` on
    the run's loop. That loop is already running our orchestrator, so the call is
    turned into an await: from a step greenlet it switches to the step's task; from a
    worker thread it is submitted to the loop and waited for; elsewhere it behaves as
    before. The override lives on this one loop object and only while a run executes.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._loop_thread = threading.get_ident()
        self._original: Callable[..., Any] | None = None

    def install(self) -> None:
        self._original = self._loop.run_until_complete
        self._loop.run_until_complete = self._run_until_complete  # type: ignore[method-assign,assignment]

    def uninstall(self) -> None:
        if self._original is not None:
            del self._loop.run_until_complete
            self._original = None

    def _run_until_complete(self, awaitable: Awaitable[Any]) -> Any:
        run = _current_step.get(None)
        if in_bridged_greenlet():
            return await_(run.timed(awaitable) if run is not None else awaitable)
        if threading.get_ident() != self._loop_thread:
            if run is not None:
                return run.await_from_thread(self._loop, awaitable)
            return asyncio.run_coroutine_threadsafe(_as_coroutine(awaitable), self._loop).result()
        assert self._original is not None
        return self._original(awaitable)


async def _as_coroutine(awaitable: Awaitable[T]) -> T:
    return await awaitable
