"""Steps lent to the run's loop while the run's local cluster starts.

A local cluster (`processes: K`) takes a second or two to start, and its steps would
wait for it while the run's loop sits idle on the same machine. Until the cluster is
ready, a step placed there only by the `placement` default (not by its op's tag) may run
on the run's loop instead, up to a few at once; each runs there to its end. Once the
cluster is ready, or failed to start, no step is lent any more.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Callable


class LoanPhase(enum.Enum):
    #: The cluster is starting: steps may be lent.
    LENDING = "lending"
    #: The cluster is ready, failed to start, or lending is off: nothing is lent.
    CLOSED = "closed"


class LoopLoans:
    """Which steps run on the run's loop while the cluster starts; used on that loop."""

    def __init__(self, limit: int) -> None:
        """`limit`: how many lent steps may run at once (0: none is lent)."""
        self._limit = limit
        self.phase = LoanPhase.LENDING if limit > 0 else LoanPhase.CLOSED
        #: Lent attempts running, per step key (a retry may be lent before the attempt
        #: it retries has let go of the loop).
        self._running: Counter[str] = Counter()
        #: The keys of the steps lent so far, in order (an attempt of a retried step
        #: may be lent again).
        self.lent: list[str] = []
        #: Called once lending ends: the steps that waited for a place can be placed.
        self.on_close: Callable[[], None] = lambda: None

    @property
    def lending(self) -> bool:
        return self.phase is LoanPhase.LENDING

    def lend(self, step_key: str) -> bool:
        """Lend the step's attempt to the loop, if the cluster still starts and fewer
        than `limit` lent steps run."""
        if self.phase is not LoanPhase.LENDING or self._running.total() >= self._limit:
            return False
        self._running[step_key] += 1
        self.lent.append(step_key)
        return True

    def ended(self, step_key: str) -> None:
        """An attempt on the run's loop is over: a lent one gives its place back."""
        if self._running[step_key] > 0:
            self._running[step_key] -= 1

    def close(self) -> None:
        if self.phase is LoanPhase.LENDING:
            self.phase = LoanPhase.CLOSED
            self.on_close()

    def describe(self) -> str:
        """For the cluster's ready event: what ran on the loop meanwhile."""
        count = len(self.lent)
        if count == 0:
            return ""
        shown = ", ".join(self.lent[:3]) + (", ..." if count > 3 else "")
        return f"; {count} step attempt(s) ran on the run's loop meanwhile ({shown})"
