"""One long-lived connection between the run process and one worker's session, over
Dask's own comms (`distributed.comm`), carrying both sides' messages (`messages`).

Messages are sent in batches without a timer: `send` (any thread) queues a message, and
the channel's writer, on the loop that owns the connection, writes whatever queued up
while its previous write was under way, as one pickled frame. A quiet channel sends each
message at once; a busy one sends many per write, so the per-message cost falls as the
traffic grows. The reader hands each batch it receives, in order, to `on_batch`.

A worker's channel also writes a PING every `messages.HEARTBEAT_SECONDS`, from the Dask
worker's own loop, so it beats while the run's steps keep the session's loop busy. The
run process takes a worker whose channel stays silent far longer as lost (`links.py`):
a process that is stopped or hung as a whole closes no connection. The run's channel
answers each PING with a PONG, which renews the worker's `Lease`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import pickle
import threading
import time
from collections.abc import Callable
from typing import Any

from dagloop.dagster.dask import messages as msg
from dagloop.dagster.dask.lease import Lease

#: Receives the messages of one frame, in the order they were sent.
OnBatch = Callable[[list[Any]], None]


class Outbox:
    """Messages waiting to be written, in the order they were sent (any thread)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._items: list[Any] = []
        #: Resolved once the frame holding their message is written to the connection.
        self._waiters: list[concurrent.futures.Future[None]] = []
        self._wake: Callable[[], None] | None = None
        self._gone = False

    def send(self, message: Any, written: concurrent.futures.Future[None] | None = None) -> None:
        """Queue `message`; `written`, if given, resolves once it is handed to the
        connection (the peer receives it even if this process dies right after), or
        fails with ConnectionError if the connection is gone."""
        with self._lock:
            self._items.append(message)
            if written is not None:
                if self._gone:
                    written.set_exception(ConnectionError("the channel is closed"))
                else:
                    self._waiters.append(written)
            wake = self._wake if len(self._items) == 1 else None
        if wake is not None:
            wake()

    def attach(self, wake: Callable[[], None]) -> None:
        """`wake` is called when a message arrives in an empty outbox (and now, if it
        holds some already)."""
        with self._lock:
            self._wake = wake
            waiting = bool(self._items)
        if waiting:
            wake()

    def take(self) -> tuple[list[Any], list[concurrent.futures.Future[None]]]:
        with self._lock:
            items, self._items = self._items, []
            waiters, self._waiters = self._waiters, []
            return items, waiters

    def fail_waiters(self) -> None:
        """The connection is gone: nothing queued will be written."""
        with self._lock:
            self._gone = True
            waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            if not waiter.done():
                waiter.set_exception(ConnectionError("the channel is closed"))


class Channel:
    def __init__(
        self,
        comm: Any,
        loop: asyncio.AbstractEventLoop,
        on_batch: OnBatch,
        outbox: Outbox | None = None,
        heartbeat: float | None = None,
        lease: Lease | None = None,
    ) -> None:
        """`heartbeat`: write a PING every that many seconds; `lease`: renewed by the
        peer's PONGs."""
        self._comm = comm
        self._loop = loop
        self._on_batch = on_batch
        self._heartbeat = heartbeat
        self._lease = lease
        self._next_ping = loop.time() + heartbeat if heartbeat is not None else None
        #: When the peer's last frame arrived (the loop's clock).
        self.last_heard = loop.time()
        self.outbox = outbox if outbox is not None else Outbox()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        #: Resolves when the connection is gone (closed by either side, or lost).
        self.closed: asyncio.Future[None] = loop.create_future()

    @property
    def peer(self) -> str:
        return str(self._comm.peer_address)

    def start(self) -> None:
        """Start reading and writing; on the channel's loop."""
        self.outbox.attach(self._wake_writer)
        self._tasks = [
            self._loop.create_task(self._read(), name="dagloop-channel-read"),
            self._loop.create_task(self._write(), name="dagloop-channel-write"),
        ]

    def send(self, message: Any) -> None:
        """Queue `message` (any thread); it is written after every message queued before."""
        self.outbox.send(message)

    async def close_with(self, message: Any, timeout: float) -> None:
        """Write `message` (waiting at most `timeout` seconds for it to be handed to the
        connection), then close."""
        written: concurrent.futures.Future[None] = concurrent.futures.Future()
        self.outbox.send(message, written)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(timeout):
                await asyncio.wrap_future(written)
        await self.aclose()

    async def aclose(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task
        with contextlib.suppress(Exception):
            await self._comm.close()
        self._gone()

    def _wake_writer(self) -> None:
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            self._wake.set()
        else:
            with contextlib.suppress(RuntimeError):  # a closed loop: nothing to write to
                self._loop.call_soon_threadsafe(self._wake.set)

    async def _write(self) -> None:
        try:
            while True:
                await self._due()
                self._wake.clear()
                batch, waiters = self.outbox.take()
                if batch:
                    await self._comm.write(pickle.dumps(batch, protocol=pickle.HIGHEST_PROTOCOL))
                for waiter in waiters:
                    if not waiter.done():
                        waiter.set_result(None)
        except asyncio.CancelledError:
            raise
        except Exception:  # the connection is gone: the reader reports it
            with contextlib.suppress(Exception):
                self._comm.abort()
            self._gone()

    async def _due(self) -> None:
        """Until messages wait; with a heartbeat, a PING is queued when one is due."""
        if self._heartbeat is None or self._next_ping is None:
            await self._wake.wait()
            return
        if self._loop.time() < self._next_ping:
            try:
                async with asyncio.timeout_at(self._next_ping):
                    await self._wake.wait()
                return
            except TimeoutError:
                pass
        self._next_ping = self._loop.time() + self._heartbeat
        self.outbox.send((msg.PING, time.monotonic()))

    async def _read(self) -> None:
        try:
            while True:
                frame = await self._comm.read()
                self.last_heard = self._loop.time()
                batch = [message for message in pickle.loads(frame) if not self._beat(message)]
                if batch:
                    self._on_batch(batch)
        except asyncio.CancelledError:
            raise
        except Exception:  # closed or lost (CommClosedError, OSError)
            pass
        finally:
            self._gone()

    def _beat(self, message: Any) -> bool:
        """Answer a PING, renew the lease by a PONG; False for any other message."""
        kind = message[0]
        if kind == msg.PING:
            self.outbox.send((msg.PONG, message[1]))
        elif kind == msg.PONG:
            if self._lease is not None:
                self._lease.renew(message[1])
        else:
            return False
        return True

    def _gone(self) -> None:
        self.outbox.fail_waiters()
        if not self.closed.done():
            self.closed.set_result(None)
        current = asyncio.current_task()
        for task in self._tasks:
            if task is not current:
                task.cancel()
