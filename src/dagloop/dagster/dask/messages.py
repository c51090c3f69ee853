"""What a worker tells the run's orchestrator, on the run's Dask event topic.

Each message is a msgpack-able list whose first item is its kind. One worker's
messages arrive in the order it sent them.
"""

from __future__ import annotations

#: `[EVENT, token, serialized DagsterEvent]`: an event of a step attempt, for the run's
#: `ActiveExecution` and the caller.
EVENT = "event"
#: `[END, token, serialized error or None]`: the attempt is over; the error
#: says the run's resources could not be opened on that worker.
END = "end"
#: `[STORE, serialized EventLogEntry]`: an entry for the run's event log, written by the
#: run process (`events_written_by: run`).
STORE = "store"
#: `[CLOSED]`: a worker tore the run's resources down (their entries were sent before).
CLOSED = "closed"
