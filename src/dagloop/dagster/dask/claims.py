"""Who may begin a step attempt on the cluster: one claim per attempt, kept by the Dask
scheduler (`Client.run_on_scheduler` runs these functions there, one at a time on its
event loop, so each is atomic against every other).

Dask may run a task more than once (it reschedules the tasks of a worker it lost), and a
Dagster step attempt must run at most once. So before a worker begins an attempt it
claims the attempt's submission here (`claim_key`): the first claim wins; any later one
(a task Dask ran again) is refused. Only the run process submits an attempt again,
under a new key, and only when the worker that claimed it was lost before its code
began. When the run stops, the run process closes the run's claims and learns which
attempts were claimed (they begin on a worker): every other attempt is refused from
then on and never begins.

The state lives in the scheduler process; this module must be importable there (as
the job's code must be on the workers).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field


@dataclass
class _RunClaims:
    #: Claim key -> address of the worker that claimed it.
    claimed: dict[str, str] = field(default_factory=dict)
    stopped: bool = False


_lock = threading.Lock()
_runs: dict[str, _RunClaims] = {}


def claim_key(token: int, submission: int) -> str:
    """The key of one submission of attempt `token` (the attempt's token in the run's
    `AttemptTable`)."""
    return f"{token}.{submission}"


def token_of(key: str) -> int:
    return int(key.partition(".")[0])


def claim(topic: str, key: str, worker: str) -> bool:
    """Worker `worker` asks to begin submission `key` of the run `topic`: True once."""
    with _lock:
        run = _runs.setdefault(topic, _RunClaims())
        if run.stopped or key in run.claimed:
            return False
        run.claimed[key] = worker
        return True


def stop(topic: str) -> dict[str, str]:
    """The run stops: refuse every claim from now on; the claims made so far."""
    with _lock:
        run = _runs.setdefault(topic, _RunClaims())
        run.stopped = True
        return dict(run.claimed)


def holder(topic: str, key: str) -> str | None:
    """The worker that claimed submission `key`, None if none did."""
    with _lock:
        run = _runs.get(topic)
        return run.claimed.get(key) if run is not None else None


def forget(topic: str) -> None:
    """The run is over: drop its claims, and refuse any task of it Dask runs later."""
    with _lock:
        _runs[topic] = _RunClaims(stopped=True)
