"""Send one run's event-log entries somewhere else than the instance's storage.

Every entry Dagster logs for a run reaches `instance.handle_new_event` (the log handler
and `report_engine_event` both call it). `route_entries` replaces that method on the
instance object, once for all the runs routed through it, and sends a routed run's
entries to its handler; other runs' entries are stored by the instance as usual. When the last route
of an instance is removed, what the instance had before is back.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import dagster as dg

from dagloop.dagster._internals import EventLogEntry

EntryHandler = Callable[[EventLogEntry], None]
#: The instance's own `handle_new_event` (stores the entry, notifies subscribers).
Store = Callable[..., None]


@dataclass(eq=False)
class _Routes:
    store: Store
    handlers: dict[str, EntryHandler] = field(default_factory=dict)
    #: What the instance object itself held before (someone else's wrapper), if anything.
    shadowed: Store | None = None


_lock = threading.Lock()
_routes: dict[int, _Routes] = {}


def route_entries(instance: dg.DagsterInstance, run_id: str, handler: EntryHandler) -> Store:
    """Send `run_id`'s entries logged through `instance` to `handler`, until
    `unroute_entries`. Returns the instance's own `handle_new_event`, which stores."""
    with _lock:
        routes = _routes.get(id(instance))
        if routes is None:
            routes = _routes[id(instance)] = _Routes(
                store=instance.handle_new_event,
                shadowed=vars(instance).get("handle_new_event"),
            )
            instance.handle_new_event = _dispatcher(routes)  # type: ignore[method-assign]
        routes.handlers[run_id] = handler
        return routes.store


def unroute_entries(instance: dg.DagsterInstance, run_id: str) -> None:
    with _lock:
        routes = _routes.get(id(instance))
        if routes is None or routes.handlers.pop(run_id, None) is None:
            return
        if not routes.handlers:
            del _routes[id(instance)]
            if routes.shadowed is not None:
                instance.handle_new_event = routes.shadowed  # type: ignore[method-assign]
            else:
                del instance.handle_new_event  # the class's method again


def _dispatcher(routes: _Routes) -> Store:
    handlers, store = routes.handlers, routes.store

    def handle_new_event(event: Any, *, batch_metadata: Any = None) -> None:
        handler = handlers.get(event.run_id)
        if handler is None:
            store(event, batch_metadata=batch_metadata)
        else:
            handler(event)

    return handle_new_event


class QuarantinedThreads:
    """Threads whose entries of a run are dropped (their step was given up on while its
    code still ran), and the run's route, which outlives the run's end until the last of
    them has left its step's code: unrouted, what they log would be stored."""

    def __init__(self, unroute: Callable[[], None]) -> None:
        self._unroute = unroute
        self._lock = threading.Lock()
        self._threads: set[int] = set()
        self._closed = False

    def __contains__(self, thread_id: int) -> bool:
        return thread_id in self._threads

    def add(self, thread_id: int) -> None:
        with self._lock:
            self._threads.add(thread_id)

    def release(self, thread_id: int) -> None:
        """The thread left its step's code: what it logs next belongs to other work."""
        with self._lock:
            if thread_id not in self._threads:
                return
            self._threads.discard(thread_id)
            unroute = self._closed and not self._threads
        if unroute:
            self._unroute()

    def close(self) -> None:
        """The run's own entries are over: unroute once no quarantined thread is left."""
        with self._lock:
            self._closed = True
            unroute = not self._threads
        if unroute:
            self._unroute()
