"""What the run process and a worker's session say to each other on their channel
(`channel.py`). Each message is a tuple whose first item is its kind; one side's
messages arrive in the order that side sent them.
"""

from __future__ import annotations

# -- the run process to a worker --------------------------------------------------------

#: `(STEP, StepCommand)`: begin this attempt now (the run counts it as begun).
STEP = "step"
#: `(MAPPINGS, mappings)`: the run's dynamic mappings, for the steps sent after it.
MAPPINGS = "mappings"
#: `(STOP, token, kind)`: stop this attempt; `kind` is TIMEOUT or INTERRUPT.
STOP = "stop"
#: `(HALT,)`: the run stops: begin no step from now on; a step sent here that has not
#: begun never does. Answered with HALTED once every BEGAN before it is sent.
HALT = "halt"
#: `(CLOSE,)`: the run ends: stop what still runs, tear the resources down, say CLOSED.
CLOSE = "close"
#: `(DISOWN, token)`: the attempt did not stop within the grace: the run process will
#: report its failure, unless its own end is already stored here. Answered with DISOWNED
#: at once (on the channel's thread, whatever the session's loop is doing).
DISOWN = "disown"
#: `(PONG, sent_at)`: the answer to a worker's PING: the run process heard from the
#: worker no earlier than `sent_at` (its `Lease`).
PONG = "pong"
#: `(LOST,)`: the run process took this worker as lost (its channel was silent too
#: long): every attempt here is disowned, as by DISOWN; the channel closes next.
LOST = "lost"

# -- a worker to the run process --------------------------------------------------------

#: `(HELLO, worker address, slots, {pool: threads}, pid)`: the session is open (or its
#: resources failed to open, and every step sent here ends with that error); it runs
#: `slots` steps at once, each pool's threads at most (`links.Pool`), in the process
#: `pid` (of its own machine).
HELLO = "hello"
#: `(BEGAN, token)`: the attempt's code began here. Sent after its STEP_START and
#: handed to the connection before any of the op's code runs, so the run process knows
#: of every attempt a lost worker may have run: the others are sent elsewhere.
BEGAN = "began"
#: `(HALTED,)`: the answer to HALT.
HALTED = "halted"
#: `(DISOWNED, token, disowned)`: the answer to DISOWN. True: nothing terminal of the
#: attempt is stored here, and its own end never will be; False: its own end is stored
#: (or being stored), and its EVENT follows.
DISOWNED = "disowned"
#: `(ENTRY, EncodedEntry)`: an entry for the run's event log, encoded as its row
#: (`events_written_by: run`).
ENTRY = "entry"
#: `(EVENT, token, DagsterEvent)`: an event of a step attempt, for the run's
#: `ActiveExecution` and the caller, handled once the entries sent before it are stored.
EVENT = "event"
#: `(END, token, SerializableErrorInfo or None)`: the attempt's code is over; the error
#: says what it raised outside Dagster's own handling (then it may have reported no
#: terminal event).
END = "end"
#: `(WRITE_FAILED, message)`: the worker could not store entries of the run
#: (`events_written_by: workers`).
WRITE_FAILED = "write_failed"
#: `(CLOSED,)`: the resources are torn down; their entries were sent before.
CLOSED = "closed"
#: `(PING, sent_at)`: the worker is there; written by its channel every
#: `HEARTBEAT_SECONDS`, with the worker's monotonic clock, and answered by the run's
#: channel on arrival.
PING = "ping"
#: How often a worker's channel says it is there.
HEARTBEAT_SECONDS = 1.0

#: How the run process asks a worker to stop a step: the exception its code is
#: interrupted with (its budget ran out, or any other interrupt).
TIMEOUT = "timeout"
INTERRUPT = "interrupt"
