"""The life of every step attempt of a run, as one synchronous state machine.

Dagster's `ActiveExecution` decides which steps run and when; `AttemptTable` decides
what each attempt it handed out may still report. It knows nothing of the event loop
that drives it (dagster/orchestrator.py), so every rule below is in this one place:

    WAITING ──withdraw──▶ WITHDRAWN ──close──▶ CLOSED     (never began: reports nothing)
       │ begin
       ▼
    RUNNING ──stop──▶ STOPPING
       │                 │   its terminal event, a failure reported on its behalf,
       ▼                 ▼   or its code ended without one (Dagster is told)
                ENDED ──close──▶ CLOSED                  (its task is over)

    RUNNING, STOPPING, ENDED ──abandon──▶ ABANDONED      (its thread is left behind)
    WAITING, RUNNING, STOPPING ──settle──▶ ENDED         (it stopped without its end)

* An attempt reports exactly one terminal event (STEP_SUCCESS, STEP_FAILURE or
  STEP_UP_FOR_RETRY). A second one is dropped, on the way to the caller (`accept`) and
  on the way to storage (`admit`), whichever sees it first.
* An attempt that never began reports nothing, as a step Dagster's executors never
  launched; one that began and ends without a terminal event gets a failure reported on
  its behalf (`settle`) or Dagster is told its state is unknown (`close`).
* Nothing an abandoned or closed attempt does reaches the run, and nothing more of a
  disowned one (its end reported by another process) is stored.

Every method is safe to call from any thread: a thread-hosted step begins in its
worker thread, and storage sees events in the thread that logs them.
"""

from __future__ import annotations

import enum
import itertools
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

P = TypeVar("P")

TERMINAL_EVENT_TYPES = frozenset({"STEP_SUCCESS", "STEP_FAILURE", "STEP_UP_FOR_RETRY"})
#: The event types that open an attempt: a step's first, and a retry's.
OPENING_EVENT_TYPES = frozenset({"STEP_START", "STEP_RESTARTED"})

#: Told (step key, event type) of each terminal event dropped on its way to storage.
DropReport = Callable[[str, str], None]


class StoredEvent(Protocol):
    """What storage's check reads of an event (a `DagsterEvent`)."""

    @property
    def step_key(self) -> str | None: ...

    @property
    def event_type_value(self) -> str: ...


class AttemptState(enum.Enum):
    WAITING = "waiting"  # handed out; its code has not begun (waits for a thread or a turn)
    RUNNING = "running"  # its code began
    STOPPING = "stopping"  # asked to stop (terminated, over budget); no terminal event yet
    ENDED = "ended"  # its outcome is settled; its hooks may still run
    WITHDRAWN = "withdrawn"  # stopped before it began: it never runs
    CLOSED = "closed"  # its task is over
    ABANDONED = "abandoned"  # it did not stop in time: left behind, reported failed


class Verdict(enum.Enum):
    """What becomes of an event an attempt reports on its way to the caller."""

    PASS = "pass"
    OPENS = "opens"  # pass it on; the attempt's time budget counts from here
    ENDS = "ends"  # pass it on: the attempt's one terminal event
    DUPLICATE = "duplicate"  # drop it: a second terminal event (worth a warning)
    LATE = "late"  # drop it: the attempt was abandoned or is over


class Settlement(enum.Enum):
    """What the driver owes an attempt that stopped without reporting its end."""

    REPORT_FAILURE = "report failure"  # report a failure on its behalf
    MARK_UNKNOWN = "mark unknown"  # its own end is stored already: Dagster marks it unknown
    NOTHING = "nothing"  # its end was settled already


class AttemptStateError(RuntimeError):
    """A transition the state machine does not allow: a bug in the driver."""


_BEGUN = frozenset({AttemptState.RUNNING, AttemptState.STOPPING, AttemptState.ENDED})
_UNSETTLED = frozenset({AttemptState.WAITING, AttemptState.RUNNING, AttemptState.STOPPING})
_FINAL = frozenset({AttemptState.CLOSED, AttemptState.ABANDONED})


@dataclass(eq=False)
class Attempt:
    """One attempt of a step, as handed out by Dagster; read-only outside the table. It
    does not hold what the driver runs it with (the table does, while it is open): the
    driver's object holds the attempt, and a cycle between them would outlive the
    attempt until the garbage collector's next full pass."""

    key: str
    #: Issued once per attempt by its table: tells an attempt from every other one,
    #: including a later attempt of the same step.
    token: int
    state: AttemptState = AttemptState.WAITING
    #: Why it was asked to stop (the exception its code is interrupted with).
    stop_reason: BaseException | None = None

    @property
    def begun(self) -> bool:
        return self.state in _BEGUN


class AttemptTable(Generic[P]):
    """Every attempt of one run and every transition of each."""

    def __init__(self, fence: Callable[[], object] | None = None) -> None:
        """`fence`: storage calls it before it decides on each step event (outside the
        table's lock); a Dask worker's waits there while its lease lapsed."""
        self._lock = threading.Lock()
        self._fence = fence
        self._tokens = itertools.count(1)
        #: Open attempts by token, with what the driver runs each with.
        self._open: dict[int, tuple[Attempt, P]] = {}
        # Storage sees events after their attempt may be closed, so it keeps tokens,
        # not attempts (which hold everything the driver runs them with).
        #: The token of the latest attempt launched for each step key.
        self._latest: dict[str, int] = {}
        #: The token of each step key's attempt whose opening event storage saw last.
        self._stored_current: dict[str, int] = {}
        #: Tokens of attempts whose terminal event passed storage (it may not have
        #: reached the caller yet).
        self._stored_ends: set[int] = set()
        #: Tokens of attempts whose end the run reports from another process: nothing
        #: more of theirs is stored here.
        self._disowned: set[int] = set()
        self._on_drop: DropReport | None = None
        #: Terminal events dropped as second ones, on the way to the caller / to storage.
        self.dropped_accepted = 0
        self.dropped_stored = 0

    # -- queries -------------------------------------------------------------------------

    def __len__(self) -> int:
        """Attempts the run still waits for (not closed, not abandoned)."""
        return len(self._open)

    def __iter__(self) -> Iterator[P]:
        """What each open attempt runs with."""
        with self._lock:
            return iter([payload for _, payload in self._open.values()])

    def begun(self) -> list[P]:
        """What each open attempt whose code began runs with: those an interrupt can
        reach."""
        with self._lock:
            return [payload for attempt, payload in self._open.values() if attempt.begun]

    # -- the driver's transitions --------------------------------------------------------

    def launch(self, key: str, payload: P) -> Attempt:
        """Dagster handed out step `key`: a new attempt, WAITING."""
        with self._lock:
            attempt = Attempt(key=key, token=next(self._tokens))
            self._open[attempt.token] = (attempt, payload)
            self._latest[key] = attempt.token
            return attempt

    def begin(self, attempt: Attempt) -> bool:
        """Its code is about to begin. False if it was withdrawn: it must not run."""
        with self._lock:
            if attempt.state is AttemptState.WITHDRAWN:
                return False
            self._require(attempt, "begin", AttemptState.WAITING)
            attempt.state = AttemptState.RUNNING
            return True

    def withdraw(self, attempt: Attempt) -> bool:
        """Make sure an attempt that has not begun never does. False if it began (stop it
        instead) or is over."""
        with self._lock:
            if attempt.state is not AttemptState.WAITING:
                return False
            attempt.state = AttemptState.WITHDRAWN
            return True

    def stop(self, attempt: Attempt, reason: BaseException) -> bool:
        """Ask a begun attempt to stop with `reason`. True the first time, while its task
        still runs (an ended attempt's hooks are stopped too)."""
        with self._lock:
            if attempt.state is AttemptState.WAITING:
                raise AttemptStateError(
                    f"step '{attempt.key}' cannot be stopped before it began: withdraw it"
                )
            if attempt.state not in _BEGUN or attempt.stop_reason is not None:
                return False
            attempt.stop_reason = reason
            if attempt.state is AttemptState.RUNNING:
                attempt.state = AttemptState.STOPPING
            return True

    def accept(self, attempt: Attempt, event_type: str) -> Verdict:
        """An event the attempt reports, on its way to the caller (the loop thread)."""
        with self._lock:
            state = attempt.state
            if state in _FINAL:
                return Verdict.LATE
            if state in (AttemptState.WAITING, AttemptState.WITHDRAWN):
                raise AttemptStateError(
                    f"step '{attempt.key}' reported {event_type} before it began"
                )
            if event_type in TERMINAL_EVENT_TYPES:
                if state is AttemptState.ENDED:
                    self.dropped_accepted += 1
                    return Verdict.DUPLICATE
                attempt.state = AttemptState.ENDED
                return Verdict.ENDS
            if event_type in OPENING_EVENT_TYPES and state is not AttemptState.ENDED:
                return Verdict.OPENS
            return Verdict.PASS

    def settle(self, attempt: Attempt) -> Settlement:
        """The attempt stopped (interrupted, cancelled, its host raised, even before its
        code began) and may not have reported its end: what the driver owes Dagster, so
        that it never waits for the step. It is ENDED afterwards."""
        with self._lock:
            if attempt.state not in _UNSETTLED:
                return Settlement.NOTHING
            attempt.state = AttemptState.ENDED
            if attempt.token in self._stored_ends:
                # Its terminal event is stored and on its way: `accept` drops it now.
                return Settlement.MARK_UNKNOWN
            return self._failure_owed(attempt)

    def abandon(self, attempt: Attempt) -> Settlement:
        """Give up on an attempt whose thread did not stop: it is over for the run, and
        nothing it reports from now on reaches it. Returns what is owed as `settle`."""
        with self._lock:
            if attempt.state in _FINAL or attempt.state is AttemptState.WITHDRAWN:
                return Settlement.NOTHING
            self._require(attempt, "be abandoned", *_BEGUN)
            owed = Settlement.NOTHING
            if attempt.state in _UNSETTLED:
                stored = attempt.token in self._stored_ends
                owed = Settlement.MARK_UNKNOWN if stored else self._failure_owed(attempt)
            attempt.state = AttemptState.ABANDONED
            del self._open[attempt.token]
            return owed

    def code_ended(self, attempt: Attempt) -> bool:
        """Its step code returned. True when it reported no terminal event: Dagster must
        be told (`verify_complete`), once. It is ENDED afterwards."""
        with self._lock:
            if attempt.state is AttemptState.WAITING:
                raise AttemptStateError(f"step '{attempt.key}' ended before it began")
            if attempt.state not in _UNSETTLED:
                return False
            attempt.state = AttemptState.ENDED
            return True

    def close(self, attempt: Attempt) -> bool:
        """Its task is over. True the first time (the driver releases what the attempt
        held); an attempt that began and never settled must be settled first."""
        with self._lock:
            if attempt.state in _FINAL:
                return False
            if attempt.state in _UNSETTLED:
                raise AttemptStateError(f"step '{attempt.key}' closed before its end was settled")
            attempt.state = AttemptState.CLOSED
            del self._open[attempt.token]
            return True

    # -- the storage side ----------------------------------------------------------------

    def set_drop_report(self, on_drop: DropReport) -> None:
        self._on_drop = on_drop

    def admit(self, event: StoredEvent | None) -> bool:
        """An event of the run on its way to storage (any thread): False for a second
        terminal event of an attempt, and for any event of a disowned one, which must
        not be stored. Storage knows events by step key only: they belong to the step's
        attempt whose opening event it stored last (a retry's attempt is launched before
        its STEP_RESTARTED is stored)."""
        if event is None or event.step_key is None:
            return True
        if self._fence is not None:
            self._fence()
        step_key, event_type = event.step_key, event.event_type_value
        opening = event_type in OPENING_EVENT_TYPES
        if not opening and event_type not in TERMINAL_EVENT_TYPES:
            return not self._disowned or self._stored_current.get(step_key) not in self._disowned
        with self._lock:
            if opening:
                latest = self._latest.get(step_key)
                if latest is not None:
                    self._stored_current[step_key] = latest
                return latest not in self._disowned
            token = self._stored_current.get(step_key)
            if token is None:
                return True  # its attempt never opened in storage: nothing to compare
            duplicate = token in self._stored_ends
            if duplicate:
                self.dropped_stored += 1
            else:
                self._stored_ends.add(token)
        if duplicate and self._on_drop is not None:
            self._on_drop(step_key, event_type)
        return not duplicate

    def disown(self, attempt: Attempt) -> bool:
        """The run reports the attempt's end from another process, whose storage path
        does not pass this table. True: no terminal event of the attempt was admitted
        to storage here, and no event of its will be from now on. False: its own end
        was admitted (it is stored, or on its way): the run must take that one."""
        with self._lock:
            if attempt.token in self._stored_ends:
                return False
            self._stored_current[attempt.key] = attempt.token
            self._stored_ends.add(attempt.token)
            self._disowned.add(attempt.token)
            return True

    def _failure_owed(self, attempt: Attempt) -> Settlement:
        # The failure reported on its behalf is this attempt's, even if storage never saw
        # it open (it never began): storage must not take it for an earlier attempt's.
        self._stored_current[attempt.key] = attempt.token
        return Settlement.REPORT_FAILURE

    def _require(self, attempt: Attempt, action: str, *states: AttemptState) -> None:
        if attempt.state not in states:
            raise AttemptStateError(
                f"step '{attempt.key}' cannot {action} in state {attempt.state.value}"
            )
