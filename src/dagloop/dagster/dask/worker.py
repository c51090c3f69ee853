"""What runs inside a Dask worker process: the call that opens a run's session there and
connects it to the run process (once per worker and run, `plugin.py`).

Steps do not travel as Dask tasks: each would cost the scheduler and the client as much
as a no-op step costs itself. The run process hands them to the
worker's session over one channel per worker, and the session sends back, on the same
channel, the steps' events and (`events_written_by: run`) their event-log entries.
"""

from __future__ import annotations

import os
import threading
from typing import Any

import dagster as dg

from dagloop.dagster.dask import messages as msg
from dagloop.dagster.dask.channel import Channel, Outbox
from dagloop.dagster.dask.lease import Lease
from dagloop.dagster.dask.run_spec import RunSpec
from dagloop.dagster.dask.session import RunSession

_lock = threading.Lock()
_instances: dict[str, dg.DagsterInstance] = {}


def _instance(ref: Any) -> dg.DagsterInstance:
    """One instance per worker process and instance ref (opening one costs ~ms)."""
    key = dg.serialize_value(ref)
    with _lock:
        instance = _instances.get(key)
        if instance is None:
            instance = dg.DagsterInstance.from_ref(ref)
            # Every log manager Dagster creates calls `logging.config.dictConfig` for the
            # instance's python_logs handlers. With several runs' sessions in one process
            # that deadlocks against other threads' handlers emitting events (logging's
            # module lock vs. a handler's lock), so resolve them once here.
            handlers = list(instance.get_yaml_python_handlers())
            instance.get_yaml_python_handlers = lambda: handlers  # type: ignore[method-assign]
            _instances[key] = instance
        return instance


async def open_session(
    spec: RunSpec, run_address: str, slots: int | None, dask_worker: Any = None
) -> str:
    """Run on every worker (`plugin.RunSessions`): connect to the run process at
    `run_address` and open the run's session, which takes `slots` steps at once (None:
    as many as the worker has threads). Returns the worker's address.

    The session closes when the run process says so or its channel is lost: a run
    whose process died leaves nothing running here."""
    import asyncio

    from distributed.comm.core import connect

    address = str(dask_worker.address)
    loop = asyncio.get_running_loop()
    # Before it connects: the run process counts this worker's silence from later on.
    lease = Lease(spec.heartbeat_timeout_seconds)
    comm = await connect(run_address, **dask_worker.security.get_connection_args("worker"))
    outbox = Outbox()
    if slots is None:
        slots = int(dask_worker.state.nthreads)
    capacity = {
        "greenlet": slots,
        "sync": min(spec.sync_threads, slots),
        "thread": min(spec.host_threads, slots),
    }
    hello = (msg.HELLO, address, slots, capacity, os.getpid())
    session = RunSession(spec, _instance(spec.instance_ref), outbox, hello, lease)
    channel = Channel(
        comm, loop, session.deliver, outbox, heartbeat=msg.HEARTBEAT_SECONDS, lease=lease
    )
    channel.start()

    def run_process_gone(_: object) -> None:
        session.run_process_gone()

    channel.closed.add_done_callback(run_process_gone)
    session.start()
    # The channel is closed by the run process once the session said CLOSED; the
    # worker's loop keeps its tasks referenced until then.
    _channels.add(channel)
    channel.closed.add_done_callback(lambda _: _channels.discard(channel))
    return address


#: Channels open in this process (their tasks must stay referenced while they run).
_channels: set[Channel] = set()
