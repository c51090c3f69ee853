"""The run process's channels to the workers' sessions: opening them, choosing a worker
with a free slot for each step, and turning what the workers send into stored entries
and step events, in the order each worker sent them."""

from __future__ import annotations

import asyncio
import contextlib
import functools
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import dagster as dg

from dagloop.dagster._internals import (
    DagsterEvent,
    EncodedEntry,
    KnownExecutionState,
    PlanExecutionContext,
)
from dagloop.dagster.attempts import OPENING_EVENT_TYPES, TERMINAL_EVENT_TYPES, AttemptState
from dagloop.dagster.dask import messages as msg
from dagloop.dagster.dask.channel import Channel
from dagloop.dagster.dask.run_spec import RunSpec
from dagloop.dagster.dask.worker_process import WorkerProcess
from dagloop.dagster.errors import EventLogWriteError
from dagloop.dagster.event_log import RunEventLog
from dagloop.dagster.step_run import StepRun
from dagloop.errors import DagloopError

#: How long the first step waits for every worker's session to open (then it goes to
#: the ones that are open).
SESSIONS_READY_SECONDS = 60.0
#: How long the workers get to tear a run's resources down when it ends.
CLOSE_SESSIONS_SECONDS = 60.0
#: How long a silent worker's channel may take to write LOST before it is closed.
LOST_WRITE_SECONDS = 1.0
#: How long a lost local worker's process gets to exit once killed.
PROCESS_END_SECONDS = 5.0


class NoWorkersError(DagloopError):
    """Every worker the run had was lost: a step cannot be placed on the cluster."""


@dataclass(eq=False)
class InFlight:
    """One attempt sent (or about to be sent) to a worker."""

    run: StepRun
    accept: Callable[[DagsterEvent], None]
    known_state: KnownExecutionState
    budget: float | None
    #: What it takes on its worker: a slot of the loop, or a thread of one of its pools.
    pool: Pool
    #: Set at its END, or when its worker is lost.
    ended: asyncio.Event = field(default_factory=asyncio.Event)
    link: Link | None = None
    #: Set once its terminal event is reported (arrived, or found stored).
    reported: asyncio.Event = field(default_factory=asyncio.Event)
    #: What its code raised outside Dagster's own handling, or the error its worker's
    #: resources failed to open with (a SerializableErrorInfo).
    end_error: Any = None
    #: Why its worker was lost (None: it was not).
    lost: str | None = None
    #: A STEP_UP_FOR_RETRY, handed to the orchestrator only once the attempt has ended:
    #: a retry started earlier would be the same step key still in flight.
    retry: DagsterEvent | None = None
    backstop: asyncio.TimerHandle | None = None
    #: The worker's answer to DISOWN, once asked.
    disowned: asyncio.Future[bool] | None = None

    @property
    def terminal(self) -> bool:
        """It reported its terminal event."""
        return self.reported.is_set()


@dataclass(eq=False)
class Link:
    """The channel to one worker's session."""

    channel: Channel
    worker: str = "?"
    #: How many steps it runs at once, in all and in each pool.
    slots: int = 0
    capacity: dict[str, int] = field(default_factory=dict)
    used: Counter[str] = field(default_factory=Counter)
    #: The session said HELLO: it takes steps.
    ready: bool = False
    #: The session said CLOSED (its teardown's entries came before).
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    #: The session said HALTED: it begins nothing any more.
    halted: asyncio.Event = field(default_factory=asyncio.Event)
    #: Attempts sent here and not yet released, by token and by step key (one attempt
    #: of a step is in flight at once).
    in_flight: dict[int, InFlight] = field(default_factory=dict)
    by_step: dict[str, InFlight] = field(default_factory=dict)
    #: Size of the dynamic mappings last sent here (-1: none yet).
    mappings_size: int = -1
    #: Why the run gave up on it while its connection was still open (it was silent).
    given_up: str | None = None
    #: Its process, when the run ends the processes of the workers it loses.
    process: WorkerProcess | None = None

    def free(self, pool: Pool) -> int:
        """Steps of `pool` it can begin at once, on arrival."""
        return min(self.slots - len(self.in_flight), self.capacity.get(pool, 0) - self.used[pool])


OnLost = Callable[[Link, str], Awaitable[None]]
OnBegan = Callable[[InFlight], None]

#: Where a step runs in its worker's session: on its loop (an async step in a greenlet),
#: or in a thread of the sync ops' pool or of the pool for hosted async steps.
Pool = Literal["greenlet", "sync", "thread"]


def pool_of(host: str | None) -> Pool:
    """The pool a step hosted as `choose_host` says takes a slot of."""
    if host is None:
        return "sync"
    return "greenlet" if host == "greenlet" else "thread"


@dataclass(eq=False)
class Links:
    job_context: PlanExecutionContext
    event_log: RunEventLog
    on_began: OnBegan
    on_lost: OnLost
    #: A worker whose channel carries nothing (not even its heartbeat) this long is lost.
    heartbeat_timeout: float
    #: The workers' processes are on this machine and the run started them (a local
    #: cluster): a lost one is killed before the run reports its steps
    #: (`worker_process.py`).
    end_lost_processes: bool = False
    _links: list[Link] = field(default_factory=list)
    _expected: int = 0
    _listener: Any = None
    #: The client and name of the plugin that opens the sessions, while registered.
    _plugin: tuple[Any, str] | None = None
    _closing: bool = False
    #: Set whenever a slot may have come free or a worker came or went.
    _changed: asyncio.Event = field(default_factory=asyncio.Event)
    _watch: asyncio.Task[None] | None = None

    async def open(self, client: Any, spec: RunSpec, slots: int | None) -> None:
        """Open the run's session on every worker of the cluster, and on each worker
        that joins it until the run ends; each connects back."""
        from distributed.comm.core import listen

        from dagloop.dagster.dask.plugin import RunSessions

        # The workers connect back as they reach the scheduler: over TLS, with the
        # cluster's own credentials, when the scheduler is reached over TLS.
        self._listener = listen(
            f"{_protocol(client)}://{_reachable_host(client)}:0",
            self._on_connect,
            **client.security.get_listen_args("client"),
        )
        await self._listener.start()
        self._watch = asyncio.create_task(self._watch_silence(), name="dagloop-dask-heartbeats")
        plugin = RunSessions(spec, self._listener.contact_address, slots)
        try:
            opened = await client.register_plugin(plugin, name=spec.topic)
        except BaseException:
            await self.aclose()
            raise
        self._plugin = (client, spec.topic)
        self._expected = len(opened)
        # Steps go to the workers whose sessions are open: wait for all of them (their
        # resources open in parallel), so the first steps are not all placed on the
        # first worker that is ready.
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(SESSIONS_READY_SECONDS):
                while len(self._links) < self._expected or not all(
                    link.ready or link.channel.closed.done() for link in self._links
                ):
                    self._changed.clear()
                    await self._changed.wait()

    @property
    def channel_address(self) -> str:
        """Where the workers connect to (its scheme says whether the channels use TLS)."""
        return str(self._listener.contact_address) if self._listener is not None else ""

    @property
    def count(self) -> int:
        """Workers whose session is open."""
        return sum(1 for link in self._links if link.ready and not link.channel.closed.done())

    async def aclose(self) -> None:
        """Close every session (their last entries reach the run's event log), then the
        channels and the listener."""
        self._closing = True
        if self._watch is not None:
            self._watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watch
        if self._plugin is not None:
            # First: a worker joining from now on opens no session of this run.
            client, name = self._plugin
            self._plugin = None
            try:
                async with asyncio.timeout(CLOSE_SESSIONS_SECONDS):
                    await client.unregister_worker_plugin(name)
            except Exception as error:  # the sessions are closed below all the same
                self.job_context.log.warning(
                    f"Unregistering the run's Dask worker plugin failed: {error!r}"
                )
        try:
            async with asyncio.timeout(CLOSE_SESSIONS_SECONDS):
                for link in self._links:
                    link.channel.send((msg.CLOSE,))
                await asyncio.gather(*(self._closed(link) for link in self._links))
        except TimeoutError:
            self.job_context.log.warning(
                "Closing the run's sessions on the Dask workers took longer than "
                f"{CLOSE_SESSIONS_SECONDS} s; their teardown may be incomplete"
            )
        finally:
            for link in self._links:
                await link.channel.aclose()
            if self._listener is not None:
                self._listener.stop()

    async def halt(self, timeout: float) -> list[Link]:
        """Tell every worker to begin no more steps; return once each answered (every
        BEGAN it sent before is handled) or is gone. The links that did not answer in
        `timeout` seconds are returned."""
        live = [link for link in self._links if not link.channel.closed.done()]
        for link in live:
            link.channel.send((msg.HALT,))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(_either(link.halted, link) for link in live))
        return [link for link in live if not link.halted.is_set()]

    async def _closed(self, link: Link) -> None:
        await _either(link.closed, link)

    # -- placing steps -----------------------------------------------------------------

    async def free_link(self, pool: Pool) -> Link:
        """The worker with the most free slots of `pool`, once one has a free slot: a
        step sent there begins as it arrives, not behind other steps."""
        while True:
            alive = [link for link in self._links if not link.channel.closed.done()]
            best = max(
                (link for link in alive if link.ready),
                key=lambda link: link.free(pool),
                default=None,
            )
            if best is not None and best.free(pool) > 0:
                return best
            if not alive and len(self._links) >= self._expected:
                raise NoWorkersError("every Dask worker of the run was lost")
            self._changed.clear()
            await self._changed.wait()

    def hold(self, record: InFlight, link: Link) -> None:
        record.link = link
        link.in_flight[record.run.attempt.token] = record
        link.by_step[record.run.key] = record
        link.used[record.pool] += 1

    def release(self, record: InFlight) -> None:
        link = record.link
        assert link is not None
        if link.in_flight.pop(record.run.attempt.token, None) is not None:
            if link.by_step.get(record.run.key) is record:
                del link.by_step[record.run.key]
            link.used[record.pool] -= 1
            self._changed.set()

    # -- from the workers --------------------------------------------------------------

    async def _on_connect(self, comm: Any) -> None:
        loop = asyncio.get_running_loop()
        link = Link(Channel(comm, loop, lambda batch: self._on_batch(link, batch)))
        self._links.append(link)
        link.channel.start()
        try:
            await link.channel.closed
            self._changed.set()
            if not self._closing and not link.closed.is_set():
                cause = link.given_up or "its connection to the run process closed"
                cause = f"{cause} ({link.channel.peer})" + await _ended(link.process)
                await self.on_lost(link, cause)
        finally:
            if link.process is not None:
                link.process.close()

    async def _watch_silence(self) -> None:
        """Give up on each worker whose channel stays silent past the heartbeat
        timeout: tell it so (LOST, in case it comes back), close its channel; it is then
        lost as if its connection had closed. A check that comes late (this loop was
        held) is skipped: the frames that arrived meanwhile are read first."""
        loop = asyncio.get_running_loop()
        checked = loop.time()
        while True:
            await asyncio.sleep(msg.HEARTBEAT_SECONDS)
            now = loop.time()
            late, checked = now - checked > 2 * msg.HEARTBEAT_SECONDS, now
            if late:
                continue
            for link in list(self._links):
                silent = now - link.channel.last_heard
                if silent > self.heartbeat_timeout and link.given_up is None:
                    if link.channel.closed.done():
                        continue
                    link.given_up = f"it sent nothing, not even a heartbeat, for {silent:.0f} s"
                    await link.channel.close_with((msg.LOST,), LOST_WRITE_SECONDS)

    def _on_batch(self, link: Link, batch: list[Any]) -> None:
        entries: list[EncodedEntry] = []
        later: list[Any] = []
        for message in batch:
            kind = message[0]
            if kind == msg.ENTRY:
                entry: EncodedEntry = message[1]
                entries.append(entry)
                if entry.event_type_value in OPENING_EVENT_TYPES and entry.step_key:
                    # Stored from now on, so the attempt began, whether or not its
                    # BEGAN (sent next) arrives.
                    opened = link.by_step.get(entry.step_key)
                    if opened is not None:
                        self.on_began(opened)
            elif kind == msg.BEGAN:
                # At once: its STEP_START's entry came before it, on its way to storage.
                record = link.in_flight.get(message[1])
                if record is not None:
                    self.on_began(record)
            elif kind == msg.HALTED:
                link.halted.set()
            elif kind == msg.DISOWNED:
                asked = link.in_flight.get(message[1])
                if asked is not None and asked.disowned is not None and not asked.disowned.done():
                    asked.disowned.set_result(message[2])
            elif kind == msg.HELLO:
                _, link.worker, link.slots, link.capacity, pid = message
                if self.end_lost_processes:
                    link.process = WorkerProcess(pid)
                link.ready = True
                self._changed.set()
            else:
                later.append(message)
        if entries:
            self.event_log.store_encoded(entries)
        if later:
            # Handled once every entry sent before them is stored, so the orchestrator
            # never acts on a step event whose entries are not stored yet.
            self.event_log.after_written(functools.partial(self._dispatch, link, later))

    def _dispatch(self, link: Link, messages: list[Any]) -> None:
        for message in messages:
            kind = message[0]
            if kind == msg.EVENT:
                self._event(link, message[1], message[2])
            elif kind == msg.END:
                record = link.in_flight.get(message[1])
                if record is not None:
                    if message[2] is not None and record.end_error is None:
                        record.end_error = dg.deserialize_value(message[2])
                    record.ended.set()
            elif kind == msg.CLOSED:
                link.closed.set()
            elif kind == msg.WRITE_FAILED:
                self.event_log.report_failure(
                    EventLogWriteError(f"Dask worker {link.worker}: {message[1]}")
                )

    def _event(self, link: Link, token: int, event: DagsterEvent) -> None:
        record = link.in_flight.get(token)
        if record is None or record.run.state is AttemptState.WITHDRAWN:
            return  # an attempt already given up on; its entries were written anyway
        if record.run.state is AttemptState.WAITING:
            self.on_began(record)  # its STEP_START overtook its BEGAN
        if event.event_type_value in TERMINAL_EVENT_TYPES:
            record.reported.set()
        if event.is_resource_init_failure:
            record.end_error = event.engine_event_data.error
        if event.is_step_up_for_retry:
            record.retry = event
            return
        record.accept(event)


async def _either(said: asyncio.Event, link: Link) -> None:
    """Until the session said `said`, or its channel is gone."""
    await first_of(said, link.channel.closed)


async def first_of(*waits: asyncio.Event | asyncio.Future[Any]) -> None:
    """Until the first of `waits` is set (an event) or done (a future); the futures are
    left as they are."""
    tasks = [
        asyncio.ensure_future(wait.wait() if isinstance(wait, asyncio.Event) else wait)
        for wait in waits
    ]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            if isinstance(task, asyncio.Task):
                task.cancel()


def _protocol(client: Any) -> str:
    """`tls` for a cluster whose scheduler is reached over TLS, else `tcp`."""
    from distributed.comm.addressing import parse_address

    scheme, _ = parse_address(client.scheduler.address)
    return "tls" if scheme == "tls" else "tcp"


def _reachable_host(client: Any) -> str:
    """This machine's address as the cluster's scheduler reaches it."""
    from distributed.comm.addressing import get_address_host
    from distributed.utils import get_ip

    host = get_address_host(client.scheduler.address)
    if host in ("127.0.0.1", "localhost", "::1"):
        return "127.0.0.1"
    with contextlib.suppress(OSError):
        return str(get_ip(host))
    return "0.0.0.0"


async def _ended(process: WorkerProcess | None) -> str:
    """Kill a lost worker's process, if the run ends those; what it says of it."""
    if process is None:
        return ""
    if await process.end(PROCESS_END_SECONDS):
        return f"; the run ended its process (pid {process.pid})"
    waited = f"{PROCESS_END_SECONDS:g} s"
    return f"; its process (pid {process.pid}) was killed but had not exited {waited} later"
