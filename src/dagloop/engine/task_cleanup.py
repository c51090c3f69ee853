"""Making sure no node task outlives the execution that started it."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Collection
from typing import Any

logger = logging.getLogger("dagloop")

#: How long `execute` waits for node tasks it cancelled (after a timeout) to unwind
#: before giving up on code that swallows cancellation.
CANCEL_GRACE_SECONDS = 2.0


async def finish_node_tasks(tasks: Collection[asyncio.Task[Any]], *, cancel: bool) -> None:
    """Wait for the node tasks still unwinding, cancelling them first when `cancel` (then
    `execute()` itself is being cancelled). Tasks that ignore cancellation for longer
    than `CANCEL_GRACE_SECONDS` are abandoned with a warning."""
    if cancel:
        for task in tasks:
            task.cancel()
    pending = [t for t in tasks if not t.done()]
    if not pending:
        return
    if not cancel:
        # Nodes are all terminal, but tasks cancelled by a timeout are still unwinding.
        _, stuck = await asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS)
    else:
        # execute() itself is being cancelled: shield the wait from a second cancel
        # so we do not leave the tasks behind, but do not wait forever.
        waiter = asyncio.ensure_future(asyncio.wait(pending, timeout=CANCEL_GRACE_SECONDS))
        try:
            _, stuck = await asyncio.shield(waiter)
        except asyncio.CancelledError:
            _, stuck = await waiter
            raise
    if stuck:
        logger.warning(
            "dagloop: %d node task(s) ignored cancellation and are abandoned: %s",
            len(stuck),
            ", ".join(sorted(t.get_name() for t in stuck)),
        )
