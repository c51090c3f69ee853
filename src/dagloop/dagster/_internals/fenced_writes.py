"""The barrier between a Dask worker's fenced writes and the run process reading them.

A worker asks its lease right before each write of the run's entries lands (its fence).
Stopped after a yes and before its write ended, it still writes when it resumes. So each
fenced write holds a lock of the run, shared, from before it asks until its write
ended, and before the run process reads what a lost worker stored it takes that lock
exclusively and lets it go (`wait_for_fenced_writes`): each write that was under way has
landed or failed by then, and one that begins later is refused by its lease.

* A batch (`storage.py`'s writers) holds it inside its own transaction: on SQLite the run
  shard's write lock; on PostgreSQL the run's advisory lock, shared, until the
  transaction ends.
* An entry Dagster stores through the instance (asset and check events: several
  transactions, on other tables or files too) holds a lock around the whole call
  (`fenced_write_hold`): on SQLite an advisory file lock (`flock`) on a file beside the
  run shard; on PostgreSQL the run's advisory lock at session level, on a connection of
  its own.

The process's end releases each of them (the kernel, or the server once the connection
drops), so a killed worker is never waited for.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import time
from collections.abc import Iterator
from typing import Any, Protocol

from dagloop.dagster._internals.names import SqliteEventLogStorage

try:
    import fcntl
except ImportError:  # Windows: single fenced writes hold no file lock there
    fcntl = None  # type: ignore[assignment]

#: How long the run process waits for a lost worker's write still under way.
LAST_WRITES_WAIT_SECONDS = 30.0
#: The first half of the run's advisory lock key on PostgreSQL ("dagl"), so that it
#: does not meet the keys of other users of the same database.
ADVISORY_LOCK_SPACE = 0x6461676C
#: Beside an SQLite run shard `<run id>.db`: the file whose lock single fenced writes
#: hold. Dagster's own globs (`*.db`, `*.db-wal`, `*.db-shm`) never match it.
SQLITE_HOLD_SUFFIX = ".dagloop-writes"
#: How often the run process tries the file lock while a write holds it.
_FILE_LOCK_POLL_SECONDS = 0.01


def advisory_lock(run_id: str) -> dict[str, int]:
    """The run's advisory lock key, as the statements' parameters: our space, and 32
    bits of the run's id (two runs that share them only wait for each other's fenced
    writes)."""
    digest = hashlib.blake2b(run_id.encode(), digest_size=4).digest()
    return {"space": ADVISORY_LOCK_SPACE, "run": int.from_bytes(digest, "big", signed=True)}


def postgres_event_log() -> Any:
    """dagster-postgres' event-log module, or None where it is not installed (it is not a
    dependency of dagloop: only PostgreSQL deployments have it)."""
    try:
        from dagster_postgres.event_log import event_log
    except ImportError:
        return None
    return event_log


class WriteHold(Protocol):
    """The run's lock, held shared around one fenced write through the instance."""

    def held(self) -> contextlib.AbstractContextManager[None]: ...

    def close(self) -> None:
        """The run's writes are over: release what the hold kept open."""


def fenced_write_hold(instance: Any, run_id: str) -> WriteHold | None:
    """The hold for the run's fenced writes through the instance, or None where the
    storage has no lock `wait_for_fenced_writes` waits for (exact types only, as for
    the batch writers)."""
    storage = instance.event_log_storage
    if type(storage) is SqliteEventLogStorage:
        if fcntl is None:
            return None
        return _FileHold(storage.path_for_shard(run_id) + SQLITE_HOLD_SUFFIX)
    postgres = postgres_event_log()
    if postgres is not None and type(storage) is postgres.PostgresEventLogStorage:
        return _AdvisoryHold(storage, run_id)
    return None


def discard_fenced_write_holds(instance: Any, run_id: str) -> None:
    """The run's workers are gone: remove the file SQLite's holds lock, so that nothing
    of the run's is left beside its shard. A lost worker that still lives (on a cluster
    the run does not own) would lock a new file, but its lease refuses its writes."""
    storage = instance.event_log_storage
    if type(storage) is SqliteEventLogStorage:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(storage.path_for_shard(run_id) + SQLITE_HOLD_SUFFIX)


def wait_for_fenced_writes(instance: Any, run_id: str) -> bool:
    """Return once no fenced write of the run (a Dask worker's) is under way: each has
    then landed or failed, and one that begins later is not waited for. False: the
    storage has no such lock, nothing was waited for. Raises once a lock stays held
    `LAST_WRITES_WAIT_SECONDS` (TimeoutError, or sqlite3's or SQLAlchemy's
    OperationalError)."""
    deadline = time.monotonic() + LAST_WRITES_WAIT_SECONDS
    storage = instance.event_log_storage
    if type(storage) is SqliteEventLogStorage:
        path = storage.path_for_shard(run_id)
        _wait_for_file_lock(path + SQLITE_HOLD_SUFFIX, deadline)
        remaining = max(deadline - time.monotonic(), 0.0)
        connection = sqlite3.connect(path, timeout=remaining)
        try:
            connection.isolation_level = None  # BEGIN and ROLLBACK as written
            connection.execute("BEGIN IMMEDIATE")
            connection.execute("ROLLBACK")
        finally:
            connection.close()
        return True
    postgres = postgres_event_log()
    if postgres is not None and type(storage) is postgres.PostgresEventLogStorage:
        import sqlalchemy as sa

        with storage.run_connection(run_id) as autocommitted:
            # dagster-postgres' engine autocommits every statement; one transaction here.
            conn = autocommitted.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                timeout_ms = int(LAST_WRITES_WAIT_SECONDS * 1000)
                conn.execute(sa.text(f"SET LOCAL lock_timeout = {timeout_ms}"))
                # Exclusive: it waits for the batches' transaction-level holds and the
                # single writes' session-level ones alike.
                conn.execute(
                    sa.text("SELECT pg_advisory_xact_lock(:space, :run)"), advisory_lock(run_id)
                )
        return True
    return False


def _wait_for_file_lock(path: str, deadline: float) -> None:
    if fcntl is None:
        return
    try:
        # Not created here: without the file no single write ever held it, and one that
        # creates it from now on is refused by its lease.
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise TimeoutError(
                        f"a fenced write of the run held {path} for {LAST_WRITES_WAIT_SECONDS:g} s"
                    ) from None
                time.sleep(_FILE_LOCK_POLL_SECONDS)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class _FileHold:
    """A shared `flock` on the file beside the run shard, for the length of one write."""

    def __init__(self, path: str) -> None:
        self._path = path

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        assert fcntl is not None
        fd = os.open(self._path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH)
            yield
        finally:
            os.close(fd)  # releases the lock

    def close(self) -> None:
        pass  # nothing is kept


class KeptConnection:
    """One connection to a PostgreSQL storage, kept from use to use: the storage's engine
    has no pool, so each `run_connection` is a new connection to the server (its
    authentication included). Closed when a statement on it failed (it may be broken;
    the next use opens another), and at the end of the run's writes."""

    def __init__(self, storage: Any, **options: Any) -> None:
        """`options`: SQLAlchemy execution options for the connection."""
        self._storage = storage
        self._options = options
        self._kept: tuple[contextlib.ExitStack, Any] | None = None

    def get(self, run_id: str) -> Any:
        if self._kept is None:
            stack = contextlib.ExitStack()
            conn = stack.enter_context(self._storage.run_connection(run_id))
            self._kept = (stack, conn.execution_options(**self._options) if self._options else conn)
        return self._kept[1]

    def close(self) -> None:
        kept, self._kept = self._kept, None
        if kept is not None:
            with contextlib.suppress(Exception):
                kept[0].close()


class _AdvisoryHold:
    """The run's advisory lock, shared at session level, for the length of one write.
    Dagster's write uses connections of its own; this one is kept from write to write,
    and dropped when a statement on it fails, which releases the lock too."""

    def __init__(self, storage: Any, run_id: str) -> None:
        import sqlalchemy as sa

        self._key = advisory_lock(run_id)
        self._run_id = run_id
        self._lock = sa.text("SELECT pg_advisory_lock_shared(:space, :run)")
        self._unlock = sa.text("SELECT pg_advisory_unlock_shared(:space, :run)")
        self._connection = KeptConnection(storage)

    @contextlib.contextmanager
    def held(self) -> Iterator[None]:
        conn = self._connection.get(self._run_id)
        try:
            conn.execute(self._lock, self._key)
        except BaseException:
            self.close()
            raise
        try:
            yield
        finally:
            try:
                conn.execute(self._unlock, self._key)
            except BaseException:
                self.close()  # its session ends, and the lock with it
                raise

    def close(self) -> None:
        self._connection.close()
