"""Watching a run's `cancel_event`: an `asyncio.Event` is awaited, a `threading.Event`
(set from another thread, which cannot wake the loop) is polled."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

#: How often a `threading.Event` passed as `cancel_event` is polled.
CANCEL_POLL_SECONDS = 0.01


def watch_cancel_event(
    event: Any,
    loop: asyncio.AbstractEventLoop,
    on_cancel: Callable[[], object],
    still_running: Callable[[], bool],
) -> tuple[Callable[[], object], asyncio.Task[Any] | None]:
    """Call `on_cancel` once `event` is set. Returns what stops watching, and the
    watcher task for an `asyncio.Event` (the caller awaits it after stopping, so it
    cannot outlive the run). Polling ends by itself once `still_running()` is False."""
    if isinstance(event, asyncio.Event):
        watcher = loop.create_task(event.wait(), name="dagloop:cancel-event")

        def watcher_done(finished: asyncio.Task[Any]) -> None:
            if not finished.cancelled():
                on_cancel()

        watcher.add_done_callback(watcher_done)
        return watcher.cancel, watcher
    handle: asyncio.TimerHandle | None = None

    def poll() -> None:
        nonlocal handle
        if event.is_set():
            on_cancel()
        elif still_running():
            handle = loop.call_later(CANCEL_POLL_SECONDS, poll)

    handle = loop.call_later(CANCEL_POLL_SECONDS, poll)

    def stop_polling() -> None:
        if handle is not None:
            handle.cancel()

    return stop_polling, None
