"""What a worker tells the run's orchestrator, on the run's Dask event topic.

Each message is a msgpack-able list whose first item is its kind. One worker's
messages arrive in the order it sent them.
"""

from __future__ import annotations

#: `[BEGAN, token, worker address]`: the worker claimed the attempt (claims.py) and
#: begins it; every other message of the attempt follows.
BEGAN = "began"
#: `[EVENT, token, serialized DagsterEvent]`: an event of a step attempt, for the run's
#: `ActiveExecution` and the caller.
EVENT = "event"
#: `[END, token, serialized error or None]`: the attempt is over; the error says the
#: run's resources could not be opened on that worker, or what its step code raised
#: outside Dagster's own handling (then it may have reported no terminal event).
END = "end"
#: `[STORE, serialized EventLogEntry, step key or None]`: an entry for the run's event
#: log, written by the run process (`events_written_by: run`); the step key when the
#: entry is a step attempt's opening event (STEP_START, STEP_RESTARTED).
STORE = "store"
#: `[CLOSED]`: a worker tore the run's resources down (their entries were sent before).
CLOSED = "closed"

#: What a Dask task of an attempt returns: it ran the attempt, or it was refused (the
#: attempt was claimed before, by this task on a worker Dask lost, or the run stopped).
RAN = "ran"
REFUSED = "refused"

#: How the run process asks a worker to stop a step (`interrupt_steps`): the exception
#: its code is interrupted with (a step's budget ran out, or any other interrupt).
TIMEOUT = "timeout"
INTERRUPT = "interrupt"
