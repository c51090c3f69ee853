"""What runs inside a Dask worker process: the Dask tasks that hand a run's steps to
the worker's `RunSession` for that run, and the call that closes it.

A step's Dask task is a coroutine on the worker's event loop that only waits for its
session. Each event of the step is stored in the run's event log by the worker's own
instance (as in a Dagster multiprocess child) and sent to the orchestrator through the
Dask scheduler's event topics (`Worker.log_event` → `Client.subscribe_topic`); the
last message of a step attempt is an end marker carrying the number of events sent.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import dagster as dg

from dagloop.dagster.dask.session import RunSession, RunSpec, StepCommand

_lock = threading.Lock()
_instances: dict[str, dg.DagsterInstance] = {}
#: This process's open sessions, by run topic.
_sessions: dict[str, RunSession] = {}


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


def _session(spec: RunSpec) -> RunSession:
    with _lock:
        session = _sessions.get(spec.topic)
        if session is None:
            session = _sessions[spec.topic] = RunSession(spec, _instance)
            session.start()
        return session


async def run_step(spec: RunSpec, command: StepCommand) -> None:
    """The Dask task of one step attempt."""
    from distributed import get_worker

    worker = get_worker()  # `Worker.log_event` is thread-safe

    def publish(message: list[Any]) -> None:
        worker.log_event(spec.topic, message)

    session = _session(spec)
    await asyncio.wrap_future(session.opened)
    done = asyncio.wrap_future(session.submit(command, publish))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        session.interrupt(command.token)
        raise


async def close_session(topic: str) -> bool:
    """Run on every worker (`Client.run`) when the run ends: tear down the run's
    resources in this process. True if this worker had a session for the run."""
    with _lock:
        session = _sessions.pop(topic, None)
    if session is None:
        return False
    await asyncio.wrap_future(session.opened)
    await asyncio.wrap_future(session.close())
    return True
