"""Raise an exception in another thread at its next Python bytecode.

A synchronous step runs in a worker thread; the loop cannot cancel it the way it
cancels a coroutine. CPython can schedule an exception in a given thread
(`PyThreadState_SetAsyncExc`); the thread raises it as soon as it executes Python
code again: at once in a loop of short sleeps or log calls, when a blocking C call
returns otherwise.

`InterruptibleSection` makes that safe to use: the exception is only scheduled while
the thread is inside the section, and leaving the section withdraws one that was
scheduled but not yet raised, so it can never surface in the code that runs after
(the thread pool's own loop, the next call).

An exception raised between a lock's `acquire()` and the `try` that releases it leaves
the lock held for ever: one such hit inside `logging` deadlocks every thread that logs.
So the exception is only scheduled at a safe point: when the thread's innermost Python
frames are the user's own code, below the framework that called it and outside the
standard library's locking modules. Until the thread reaches one, the caller retries
(`try_interrupt`); a thread that never does (blocked in C under `threading`, say) is
left to its caller's grace period.
"""

from __future__ import annotations

import ctypes
import sys
import threading
from collections.abc import Callable
from types import FrameType

_set_async_exc = ctypes.pythonapi.PyThreadState_SetAsyncExc
_set_async_exc.argtypes = (ctypes.c_ulong, ctypes.py_object)
_set_async_exc.restype = ctypes.c_int


def _schedule(thread_id: int, exc_type: type[BaseException] | None) -> bool:
    # None withdraws a pending exception; the C API takes NULL for that.
    obj = ctypes.py_object(exc_type) if exc_type is not None else ctypes.py_object()
    changed = _set_async_exc(ctypes.c_ulong(thread_id), obj)
    return bool(changed == 1)


#: Modules whose frames mark the framework that runs the user's code: the walk up from the
#: innermost frame stops at the first of them.
FRAMEWORK_MODULES = ("dagster", "dagloop")
#: Standard-library modules that hold locks around their work (a handler's lock, a
#: condition, a queue's mutex): never interrupted inside.
_LOCKING_MODULES = ("logging", "threading", "queue", "concurrent", "multiprocessing", "importlib")


def _top_package(frame: FrameType) -> str:
    name = frame.f_globals.get("__name__", "")
    return str(name).partition(".")[0]


def at_safe_point(frame: FrameType | None, framework: tuple[str, ...] = FRAMEWORK_MODULES) -> bool:
    """True when the innermost frames (up to the framework that called them) are the
    user's code and none of them is in a locking module of the standard library."""
    seen_user_frame = False
    while frame is not None:
        package = _top_package(frame)
        if package in framework:
            return seen_user_frame
        if package in _LOCKING_MODULES:
            return False
        seen_user_frame = True
        frame = frame.f_back
    return False


class InterruptibleSection:
    """A stretch of one thread's work that another thread may interrupt.

    The exception is given as a class (the C API instantiates it without arguments);
    `exception_class` builds one from an exception instance.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._thread_id: int | None = None
        self._requested: type[BaseException] | None = None
        self.interrupted_with: type[BaseException] | None = None

    def enter(self) -> None:
        """Called by the thread that runs the section, first thing."""
        with self._lock:
            self._thread_id = threading.get_ident()

    def leave(self) -> None:
        """Called by the same thread on its way out, however it leaves.

        A scheduled exception may be raised inside this very call; it is then swallowed
        and the withdrawal repeated, so the caller always returns normally from here."""
        while True:
            try:
                with self._lock:
                    thread_id, self._thread_id = self._thread_id, None
                    if thread_id is not None:
                        _schedule(thread_id, None)
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

    def request_interrupt(self, exc_type: type[BaseException]) -> None:
        """Ask for `exc_type` to be raised in the section's thread at its next safe point;
        `try_interrupt` delivers it (call it again until it returns True)."""
        with self._lock:
            if self._requested is None:
                self._requested = exc_type

    def try_interrupt(self) -> bool:
        """Deliver a requested interrupt if the thread is at a safe point. True once it
        is delivered (or nothing is left to deliver)."""
        with self._lock:
            if self._requested is None or self.interrupted_with is not None:
                return True
            if self._thread_id is None:
                return False
            frame = sys._current_frames().get(self._thread_id)
            if not at_safe_point(frame):
                return False
            self.interrupted_with = self._requested
            return _schedule(self._thread_id, self._requested)


def exception_class(template: BaseException) -> type[BaseException]:
    """A subclass of `template`'s class whose no-argument constructor makes a copy of
    `template`: the C API raises exceptions by class, yet an interrupt carries a message."""
    base = type(template)

    def __init__(self: BaseException) -> None:
        BaseException.__init__(self, *template.args)
        self.__dict__.update(template.__dict__)

    return type(base.__name__, (base,), {"__init__": __init__, "__module__": base.__module__})
