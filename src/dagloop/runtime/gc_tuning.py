"""The garbage collector's settings while a big run executes in this process.

A run's plan, its resources and every module imported before it are alive for the whole
run, and Python's collector scans them again at every full collection, more often as
the run's own objects pile up. `tuned_gc()` freezes what is alive when the run's steps
start (`gc.freeze()`: never scanned again, never freed by the collector) and collects
the youngest generation less often (`THRESHOLD0`). Both are undone when the last run
using them ends (reference-counted: concurrent runs in one process share them). Frozen
objects that die during the run are freed by reference counting as usual; only cycles
among them wait for the unfreeze.

Set `DAGLOOP_GC_TUNING=0` to leave the collector alone (e.g. to measure the difference).
"""

from __future__ import annotations

import gc
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager

#: Allocations (net) between two collections of the youngest generation (Python's
#: default is 700 up to 3.12; 2000 from 3.13).
THRESHOLD0 = 10_000

_lock = threading.Lock()
_users = 0
_saved: tuple[int, ...] | None = None
_froze = False


def enabled() -> bool:
    return os.environ.get("DAGLOOP_GC_TUNING", "1").strip().lower() not in ("0", "false", "no")


@contextmanager
def tuned_gc() -> Iterator[None]:
    """Collector settings for a run's duration (see the module's docstring)."""
    if not enabled():
        yield
        return
    _enter()
    try:
        yield
    finally:
        _leave()


def _enter() -> None:
    global _users, _saved, _froze
    with _lock:
        _users += 1
        if _users > 1:
            return
        _saved = gc.get_threshold()
        # Someone else manages frozen objects (e.g. a pre-forking server): leave them be.
        _froze = gc.isenabled() and gc.get_freeze_count() == 0
        if _froze:
            gc.freeze()
        threshold = list(_saved)
        threshold[0] = max(threshold[0], THRESHOLD0)
        gc.set_threshold(*threshold)


def _leave() -> None:
    global _users, _saved, _froze
    with _lock:
        _users -= 1
        if _users > 0:
            return
        if _saved is not None:
            gc.set_threshold(*_saved)
            _saved = None
        if _froze:
            gc.unfreeze()
            _froze = False
