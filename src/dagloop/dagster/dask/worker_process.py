"""The process of a local cluster's worker, which the run process can end for good.

A worker the run takes as lost may be stopped or hung rather than dead, and may resume.
Its lease keeps it from storing once it lapsed, but a write it was inside of when it
stopped can still land, and on SQLite it holds the file's write lock while it is stopped,
so that no process can store anything. Ending its process is a fence without either gap:
once the process has exited it holds no lock and no transaction, and nothing of it can be
stored any more. The workers of `processes: K` run on the run process's machine, which
started them, so the run ends a lost one before it reads what that worker stored.

On Linux the process is held by a pidfd from the moment its session says HELLO: the
signal cannot reach another process that took its pid later, and the pidfd says when it
has exited. Elsewhere its pid is signalled and polled.
"""

from __future__ import annotations

import asyncio
import os
import select
import signal
import time

#: Between two looks at whether an ended process has exited.
POLL_SECONDS = 0.005


class WorkerProcess:
    """A local worker's process, from its session's HELLO until the run is done with it."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self._fd: int | None = None
        #: Gone before it could be held: its pid may be another process's by now.
        self._gone = False
        if hasattr(os, "pidfd_open"):
            try:
                self._fd = os.pidfd_open(pid)
            except ProcessLookupError:
                self._gone = True
            except OSError:  # a kernel without pidfds: its pid, as elsewhere
                pass

    async def end(self, timeout: float) -> bool:
        """Kill the process, then wait until it has exited: True once it has, False if it
        still runs after `timeout` seconds (a process in an uninterruptible wait)."""
        if self._gone:
            return True
        try:
            if self._fd is not None:
                signal.pidfd_send_signal(self._fd, signal.SIGKILL)
            else:
                os.kill(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while not self._exited():
            if time.monotonic() >= deadline:
                return False
            await asyncio.sleep(POLL_SECONDS)
        return True

    def close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)

    def _exited(self) -> bool:
        if self._fd is not None:
            readable, _, _ = select.select([self._fd], [], [], 0)
            return bool(readable)
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        return False
