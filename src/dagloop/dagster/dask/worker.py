"""What runs inside a Dask worker process: the Dask tasks that hand a run's steps to
the worker's `RunSession` for that run, and the call that closes it.

A step's Dask task is a coroutine on the worker's event loop that only waits for its
session. The session publishes the step's events on the run's Dask topic
(`Worker.log_event` → `Client.subscribe_topic`; see `messages`). Entries for the run's
event log are either sent along for the run process to write (`events_written_by:
run`, the default: one writer, no lock contention between processes) or written by the
worker's own instance, as in a Dagster multiprocess child.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

import dagster as dg

from dagloop.dagster.attempts import OPENING_EVENT_TYPES
from dagloop.dagster.dask import claims
from dagloop.dagster.dask.messages import BEGAN, CLOSED, INTERRUPT, RAN, REFUSED, STORE
from dagloop.dagster.dask.session import RunSession, RunSpec, StepCommand
from dagloop.dagster.entry_routes import route_entries, unroute_entries

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


def _session(spec: RunSpec, publish: Callable[[list[Any]], None]) -> RunSession:
    instance = _instance(spec.instance_ref)
    with _lock:
        session = _sessions.get(spec.topic)
        if session is None:
            if spec.events_written_by == "run":
                # The run process writes them (see dagster/event_log/).
                route_entries(instance, spec.dagster_run.run_id, _sender(publish))
            session = _sessions[spec.topic] = RunSession(spec, _instance, publish)
            session.start()
        return session


def _sender(publish: Callable[[list[Any]], None]) -> Callable[[Any], None]:
    """Sends each entry to the run process; an attempt's opening event also names its
    step, so that the run process knows the step's code began even if this worker is
    lost before the event itself reaches it."""

    def send(entry: Any) -> None:
        event = entry.dagster_event
        opened = event is not None and event.event_type_value in OPENING_EVENT_TYPES
        publish([STORE, dg.serialize_value(entry), event.step_key if opened else None])

    return send


def _publisher(topic: str, worker: Any = None) -> Callable[[list[Any]], None]:
    if worker is None:
        from distributed import get_worker

        worker = get_worker()  # `Worker.log_event` is thread-safe

    def publish(message: list[Any]) -> None:
        worker.log_event(topic, message)

    return publish


async def run_step(spec: RunSpec, mappings: Any, command: StepCommand) -> str:
    """The Dask task of one step attempt; `mappings` are the run's dynamic mappings
    when the step started (the same object for all steps sent since they last grew).

    The attempt begins only if this task claims it first (claims.py): a task Dask runs
    again (its worker was lost) or one that starts after the run stopped is refused
    and runs nothing. Returns RAN or REFUSED."""
    from distributed import get_client, get_worker

    worker = get_worker()
    address = str(worker.address)
    key = claims.claim_key(command.token, command.submission)
    claimed = await get_client().run_on_scheduler(claims.claim, spec.topic, key, address)
    if not claimed:
        return REFUSED
    publish = _publisher(spec.topic, worker)
    publish([BEGAN, command.token, address])
    session = _session(spec, publish)
    await asyncio.wrap_future(session.opened)
    done = asyncio.wrap_future(session.submit(command, mappings))
    try:
        await asyncio.shield(done)
    except asyncio.CancelledError:
        session.interrupt(command.token, INTERRUPT)
        raise
    return RAN


async def interrupt_steps(
    topic: str, stops: list[tuple[int, str]], dask_worker: Any = None
) -> None:
    """Run on one worker (`Client.run`): stop these attempts of the run's session, each
    with its kind of interrupt (messages.TIMEOUT / INTERRUPT)."""
    with _lock:
        session = _sessions.get(topic)
    if session is not None:
        for token, kind in stops:
            session.interrupt(token, kind)


async def close_session(topic: str, dask_worker: Any = None) -> bool:
    """Run on every worker (`Client.run`) when the run ends: tear down the run's
    resources in this process, then publish CLOSED. True if this worker had a session
    for the run."""
    with _lock:
        session = _sessions.pop(topic, None)
    if session is None:
        return False
    try:
        await asyncio.wrap_future(session.opened)
        await asyncio.wrap_future(session.close())
    finally:
        unroute_entries(_instance(session.spec.instance_ref), session.spec.dagster_run.run_id)
        _publisher(topic, dask_worker)([CLOSED])
    return True
