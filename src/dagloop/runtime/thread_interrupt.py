"""Raise an exception in another thread, only while that thread runs the code it was
asked to stop.

A synchronous step runs in a worker thread; the loop cannot cancel it the way it
cancels a coroutine. CPython can schedule an exception in a given thread
(`PyThreadState_SetAsyncExc`); the thread raises it at its next check for pending
work: at once in a loop of short sleeps, when a blocking C call returns otherwise.

Raised at an arbitrary point, such an exception is dangerous: between a lock's
`acquire()` and the `try` that releases it, it leaves the lock held for ever (one hit in
`logging` deadlocks every thread that logs), and inside a framework's bookkeeping it
tears state that the framework then reports twice. So the exception is only raised at
an *interruptible point*, defined positively:

* the thread's stack contains a frame of one of the section's *entry points* (for a
  Dagster step: the op's own compute function), and
* every frame the entry point has called, down to the innermost one, is code it
  called on its own account: none belongs to the framework (`FRAMEWORK_PACKAGES`, e.g.
  `context.log` calls) or to the standard library's locking plumbing
  (`PLUMBING_PACKAGES`: `logging`, `threading`, `queue`, ...).

A suspended generator's frame is not on its thread's stack, so a generator op is
interruptible only while its own frame runs, never while the framework iterates it.
Docs: docs/interrupts.md.

Two ways deliver it, whichever comes first:

* **Sampling** (from the controlling thread, `try_interrupt`): the thread's position
  is sampled and judged; the exception is scheduled only if the thread has not moved
  since (same innermost frame at the same instruction), and the position is sampled
  once more right after, to count the rare case where it moved in between. This finds
  a thread that runs the op's own code most of the time (a loop, a sleep).
* **A trap** (in the thread itself, `checkpoint`): framework code the thread passes
  through while an interrupt is pending (a log call reaching the run's event log, a
  write to a captured stream) arms a trace function in that thread, on the frames of
  the op's code below it and on entry-point frames it enters (a generator op being
  resumed). The first line that then starts in an interruptible frame raises the
  exception, from the thread itself: exact, and at once for code that spends nearly
  all its time inside such calls, which sampling would rarely catch in its own frame.
  The trap is not armed in a thread that already has a trace function (a debugger, a
  coverage tool), and it is removed when the section is left.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable, Collection
from types import CodeType, FrameType
from typing import Any

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def _schedule(thread_id: int, exc_type: type[BaseException]) -> bool:
    """Schedule `exc_type` in the thread; True if the thread exists.

    There is deliberately no withdrawal (`PyThreadState_SetAsyncExc(id, NULL)`): CPython
    (3.11 at least) signals the interpreter's eval breaker for it as for a real
    exception, and only a thread that then raises an asynchronous exception resets it.
    Left set, it sends every thread through the pending-work handler at every check,
    and a thread with a trace function then loops for ever at a function's entry."""
    changed = _set_async_exc(ctypes.c_ulong(thread_id), ctypes.py_object(exc_type))
    return bool(changed == 1)


class _Absorbed(BaseException):
    """Replaces a pending exception of the current thread; raised and caught at once."""


def _absorb_pending() -> None:
    """Called by a thread on itself: whatever asynchronous exception is pending for it
    is replaced by `_Absorbed`, which is raised and caught right here (and resets the
    eval breaker, as a raised asynchronous exception does)."""
    try:
        _schedule(threading.get_ident(), _Absorbed)
        while True:  # the loop's backward jump checks for the pending exception
            pass
    except _Absorbed:
        pass


#: Packages of the framework that calls the entry points: never interrupted inside.
FRAMEWORK_PACKAGES = frozenset({"dagster", "dagster_shared", "dagster_pipes", "dagloop"})
#: Standard-library packages that hold process-wide locks or hand work between threads
#: (a handler's lock, a condition, a queue's mutex, an event loop's self-pipe).
PLUMBING_PACKAGES = frozenset(
    {
        "logging",
        "threading",
        "queue",
        "concurrent",
        "multiprocessing",
        "importlib",
        "asyncio",
        "selectors",
        "warnings",
    }
)
_NOT_INTERRUPTIBLE = FRAMEWORK_PACKAGES | PLUMBING_PACKAGES

#: The section the current thread is inside, for `checkpoint`.
_inside = threading.local()


def checkpoint() -> None:
    """Called by framework code that may run inside a section's thread (a log handler,
    a stream write): arms the section's trap if an interrupt is pending for it."""
    section: InterruptibleSection | None = getattr(_inside, "section", None)
    if section is not None and section.pending:
        section.arm_trap()


def _top_package(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__", "")
    return str(name).partition(".")[0]


def interruptible_at(frame: FrameType | None, entry_points: Collection[int]) -> bool:
    """True when `frame` (a thread's innermost frame) is inside an entry point (given by
    `id` of its code object) and nothing between it and the entry point is framework
    or plumbing code."""
    while frame is not None:
        if id(frame.f_code) in entry_points:
            return True
        if _top_package(frame) in _NOT_INTERRUPTIBLE:
            return False
        frame = frame.f_back
    return False


class InterruptibleSection:
    """A stretch of one thread's work that another thread may interrupt, at
    interruptible points of `entry_points` only.

    The exception is given as a class (the C API instantiates it without arguments);
    `exception_class` builds one from an exception instance. Leaving the section
    disposes of one that was scheduled but not yet raised, so it never surfaces in the
    code that runs after (the thread pool's own loop, the next call).
    """

    def __init__(self, entry_points: Collection[CodeType] = ()) -> None:
        self._lock = threading.Lock()
        # Ids, compared by identity (code objects compare by value, which is slower and
        # could equate two functions); the objects are kept so the ids stay theirs.
        self._entry_code = tuple(entry_points)
        self._entry_ids = frozenset(id(code) for code in self._entry_code)
        self._thread_id: int | None = None
        self._entered = False
        self._requested: type[BaseException] | None = None
        self.interrupted_with: type[BaseException] | None = None
        #: Sampled deliveries during which the thread moved (see `try_interrupt`).
        self.moved_while_scheduling = 0
        #: An exception was scheduled by sampling (it may still be pending at `leave`).
        self._scheduled = False
        #: How the interrupt was delivered: "sampled" or "trapped" (None: not yet).
        self.delivered_by: str | None = None
        self._trapped_frames: list[FrameType] = []
        self._trap_armed = False

    @property
    def entry_code(self) -> tuple[CodeType, ...]:
        return self._entry_code

    @property
    def entered(self) -> bool:
        return self._entered

    @property
    def pending(self) -> bool:
        """An interrupt was requested and not delivered yet."""
        return self._requested is not None and self.interrupted_with is None

    def enter(self) -> None:
        """Called by the thread that runs the section, first thing."""
        with self._lock:
            self._entered = True
            self._thread_id = threading.get_ident()
        _inside.section = self

    def leave(self) -> None:
        """Called by the same thread on its way out, however it leaves.

        An exception scheduled by sampling but not raised yet must not surface in the
        code that runs after; it is replaced by one raised and caught here (`_absorb`).
        The scheduled exception may also be raised inside this very call; it is then
        swallowed, so the caller always returns normally from here."""
        while True:
            try:
                _inside.section = None
                self._disarm_trap()
                with self._lock:
                    self._thread_id = None  # from here on, nothing more is scheduled
                    scheduled = self._scheduled
                    self._scheduled = False
                if scheduled:
                    _absorb_pending()
                return
            except BaseException as exc:  # only the scheduled exception can land here
                if self.interrupted_with is None or not isinstance(exc, self.interrupted_with):
                    raise

    def while_inside(self, fn: Callable[[int], None]) -> bool:
        """Call `fn(thread_id)` if a thread is inside, atomically with respect to its
        leaving; False if none is."""
        with self._lock:
            if self._thread_id is None:
                return False
            fn(self._thread_id)
            return True

    def current_frame(self) -> FrameType | None:
        """The innermost frame of the thread inside, if any (for reports)."""
        with self._lock:
            if self._thread_id is None:
                return None
            return sys._current_frames().get(self._thread_id)

    def request_interrupt(self, exc_type: type[BaseException]) -> None:
        """Ask for `exc_type` to be raised in the section's thread at its next
        interruptible point; `try_interrupt` delivers it (call it until it returns True)."""
        with self._lock:
            if self._requested is None:
                self._requested = exc_type

    def try_interrupt(self) -> bool:
        """Deliver a requested interrupt if the thread is at an interruptible point.
        True once it is delivered (or nothing is left to deliver)."""
        with self._lock:
            requested = self._requested
            if requested is None or self.interrupted_with is not None:
                return True
            thread_id = self._thread_id
            if thread_id is None:
                return False
            frame = sys._current_frames().get(thread_id)
            if frame is None or not interruptible_at(frame, self._entry_ids):
                return False
            position = frame.f_lasti
            # Judging took many bytecodes, during which this thread may have handed the
            # GIL to the target. Schedule only if it has not moved since; what runs
            # between this second look and the scheduling is a few bytecodes.
            if not self._still_at(thread_id, frame, position):
                return False
            if not _schedule(thread_id, requested):
                return False
            self._scheduled = True
            if not self._still_at(thread_id, frame, position):
                # It moved within those few bytecodes. A pending exception cannot be
                # withdrawn from here without leaving the interpreter's eval breaker
                # set for good (CPython signals even a withdrawal), so this is only
                # counted: the stress benchmark reports how often it happens.
                self.moved_while_scheduling += 1
            self.interrupted_with = requested
            self.delivered_by = "sampled"
            return True

    # -- the trap (runs in the section's own thread) --------------------------------

    def arm_trap(self) -> None:
        if self._trap_armed or not self._entry_ids or sys.gettrace() is not None:
            return
        self._trap_armed = True
        # Frames of the op's code between the entry point and here get a line tracer:
        # whichever of them runs its next line first, once this call has returned.
        frame: FrameType | None = sys._getframe(1)
        while frame is not None:
            if _top_package(frame) not in _NOT_INTERRUPTIBLE:
                frame.f_trace = self._on_line
                frame.f_trace_lines = True
                self._trapped_frames.append(frame)
            if id(frame.f_code) in self._entry_ids:
                break
            frame = frame.f_back
        sys.settrace(self._on_call)

    def _disarm_trap(self) -> None:
        if not self._trap_armed:
            return
        self._trap_armed = False
        sys.settrace(None)
        for frame in self._trapped_frames:
            frame.f_trace = None
        self._trapped_frames.clear()

    def _on_call(self, frame: FrameType, event: str, arg: object) -> Any:
        # A new frame of an entry point (a generator op resumed): trace its lines too.
        if id(frame.f_code) in self._entry_ids:
            return self._on_line
        return None

    def _on_line(self, frame: FrameType, event: str, arg: object) -> Any:
        if event == "line" and interruptible_at(frame, self._entry_ids):
            with self._lock:
                requested = self._requested
                if requested is None or self.interrupted_with is not None:
                    return None
                self.interrupted_with = requested
                self.delivered_by = "trapped"
            raise requested()
        return self._on_line

    @staticmethod
    def _still_at(thread_id: int, frame: FrameType, position: int) -> bool:
        now = sys._current_frames().get(thread_id)
        return now is frame and frame.f_lasti == position


def exception_class(template: BaseException) -> type[BaseException]:
    """A subclass of `template`'s class whose no-argument constructor makes a copy of
    `template`: the C API raises exceptions by class, yet an interrupt carries a message."""
    base = type(template)

    def __init__(self: BaseException) -> None:
        BaseException.__init__(self, *template.args)
        self.__dict__.update(template.__dict__)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})
