"""How long the run process still counts a worker as present, seen from the worker.

The run process takes a worker as lost once it heard nothing from it for the heartbeat
timeout (`links.py`), and then reports the failure of every attempt the worker began; it
reads from storage which attempts a lost worker began or ended. A worker that was
stopped or stalled for that long does not know it was lost until it reads LOST: a step
whose code ends the moment it resumes, or a write it had begun, could still store an
entry the run has already accounted for (a second terminal event, a start that never
ends). So a worker stores under a lease.

Each PING carries the time the worker sent it, and the run process answers with a PONG
carrying the same time. The run read that PING, so it heard from the worker no earlier
than then and cannot take the worker as lost before that time plus the timeout. The
lease runs out a safety margin before that moment. Storage asks it twice: before it
takes a step's event (`AttemptTable`'s fence), and inside each batch's transaction,
right before the commit (`RunStore`'s fence). While the lease lapsed both wait for the
next PONG. When the worker learns it was lost (LOST, or its channel closed), its session
disowns every attempt first and ends the lease next: the waiting event is dropped, the
waiting batch rolled back.

Both sides measure time with their monotonic clocks, which advance at the same rate on
one machine and within parts per million across machines.
"""

from __future__ import annotations

import threading
import time

#: The share of the heartbeat timeout the lease keeps in reserve for the write itself.
SAFETY_SHARE = 1 / 3


class Lease:
    """Held while the run process cannot yet have taken this worker as lost."""

    def __init__(self, heartbeat_timeout: float, start: float | None = None) -> None:
        """`start`: a time (monotonic) before the connection to the run process opened;
        the run counts the worker's silence from later than that."""
        self._length = heartbeat_timeout * (1 - SAFETY_SHARE)
        self._until = (time.monotonic() if start is None else start) + self._length
        self._ended = False
        self._changed = threading.Condition()

    @property
    def held(self) -> bool:
        return not self._ended and time.monotonic() < self._until

    @property
    def ended(self) -> bool:
        return self._ended

    def renew(self, ping_sent_at: float) -> None:
        """The run process answered the PING sent at `ping_sent_at` (any thread)."""
        with self._changed:
            until = ping_sent_at + self._length
            if until > self._until:
                self._until = until
                self._changed.notify_all()

    def end(self) -> None:
        """The worker learned it was lost (after its session disowned every attempt)."""
        with self._changed:
            self._ended = True
            self._changed.notify_all()

    def wait(self) -> bool:
        """Return once the lease is held (True), or has ended (False); any thread but the
        channel's."""
        if not self._ended and time.monotonic() < self._until:
            return True
        with self._changed:
            while not self._ended and time.monotonic() >= self._until:
                self._changed.wait()
            return not self._ended
