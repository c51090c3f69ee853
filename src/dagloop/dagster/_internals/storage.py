"""Event-log storage: in-process listeners, and writers of many entries of one run in
one transaction, for the storages whose `store_event` writes one row per entry."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any, Protocol

from dagloop.dagster._internals.fenced_writes import (
    KeptConnection,
    advisory_lock,
    postgres_event_log,
)
from dagloop.dagster._internals.names import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    PIPELINE_EVENTS,
    EventLogCursor,
    EventLogEntry,
    InMemoryEventLogStorage,
    SqlEventLogStorage,
    SqlEventLogStorageTable,
    SqliteEventLogStorage,
)


class EncodedEntry:
    """An entry of the run that another process (a Dask worker) already turned into the
    row its storage inserts (`encode_entry`): the run process stores it without decoding
    it. Decoded only where something needs the entry itself (a listener, an entry
    stored through the instance)."""

    __slots__ = ("row",)

    def __init__(self, row: dict[str, Any]) -> None:
        self.row = row

    @property
    def step_key(self) -> str | None:
        key: str | None = self.row.get("step_key")
        return key

    @property
    def event_type_value(self) -> str:
        """The entry's event type ("" for a log message, which has none)."""
        value: str | None = self.row.get("dagster_event_type")
        return value or ""

    def decode(self) -> EventLogEntry:
        import dagster as dg

        entry: EventLogEntry = dg.deserialize_value(self.row["event"], EventLogEntry)
        return entry


#: An entry to store: decoded, or encoded elsewhere as its row.
Storable = EventLogEntry | EncodedEntry


#: Called inside a batch's transaction once its rows are written, before the commit; an
#: exception it raises rolls the batch back.
BeforeCommit = Callable[[], None]


class BatchWriter(Protocol):
    """Writes many entries of one run in one transaction (any one thread at a time)."""

    def __call__(
        self, run_id: str, entries: Sequence[Storable], before_commit: BeforeCommit | None = None
    ) -> None: ...

    def close(self) -> None:
        """The run's writes are over: release what the writer kept open (a later write
        opens it again)."""


#: How long a write waits for another connection's lock on an SQLite file.
SQLITE_BUSY_SECONDS = 30.0


def encode_entry(storage: Any, entry: EventLogEntry) -> EncodedEntry:
    """`entry` as the row an SQL event log inserts for it (`_event_to_row`, the storage's
    own encoding). A storage without one gets the columns the run process reads."""
    if isinstance(storage, SqlEventLogStorage):
        return EncodedEntry(storage._event_to_row(entry))
    import dagster as dg

    event = entry.dagster_event
    return EncodedEntry(
        {
            "event": dg.serialize_value(entry),
            "dagster_event_type": event.event_type_value if event is not None else None,
            "step_key": entry.step_key,
        }
    )


def decoded(entry: Storable) -> EventLogEntry:
    return entry.decode() if isinstance(entry, EncodedEntry) else entry


def _row(storage: Any, entry: Storable) -> dict[str, Any]:
    if isinstance(entry, EncodedEntry):
        return entry.row
    row: dict[str, Any] = storage._event_to_row(entry)
    return row


def event_listeners(instance: Any, run_id: str) -> list[Callable[[EventLogEntry], None]]:
    """The in-process subscribers of a run's entries (`instance.add_event_listener`), which
    `handle_new_event` calls after storing an entry."""
    subscribers: Any = instance._subscribers
    return list(subscribers.get(run_id, ()))


def event_log_in_memory(instance: Any) -> bool:
    """True when the instance's event log lives in this process's memory (ephemeral
    instances): writing it costs CPU only, and a crash loses it all anyway."""
    return type(instance.event_log_storage) is InMemoryEventLogStorage


#: Event types whose `store_event` or `instance.handle_new_event` writes more than the
#: entry's row: SQLite mirrors asset, asset-check and run-status events into its index
#: shard; SQLite and PostgreSQL index asset events (asset_keys, asset_event_tags) and
#: asset-check events (asset_check_executions); the instance updates the run's status in
#: run storage for every run (job) event, RUN_DEQUEUED included.
_MIRRORED_EVENT_TYPES = (
    ASSET_EVENTS | ASSET_CHECK_EVENTS | PIPELINE_EVENTS | set(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
)


_MIRRORED_EVENT_TYPE_VALUES = frozenset(event_type.value for event_type in _MIRRORED_EVENT_TYPES)


def writes_to_run_shard_only(entry: Storable) -> bool:
    """True for step events and logs, which storing writes as one row of the run's event
    log and nothing else, on SQLite and PostgreSQL alike; False for asset, asset-check
    and run (job) events, which are also written elsewhere (they are written one by one,
    through the instance)."""
    if isinstance(entry, EncodedEntry):
        return entry.event_type_value not in _MIRRORED_EVENT_TYPE_VALUES
    event = entry.dagster_event
    return event is None or event.event_type not in _MIRRORED_EVENT_TYPES


def run_shard_batch_writer(instance: Any) -> BatchWriter | None:
    """A writer of many entries of one run in one transaction, or None if the instance's
    event log has none we can use. Only for entries `writes_to_run_shard_only` accepts:
    for those, `store_event` writes one row of the event_logs table and nothing else.

    SQLite's `store_event` opens an engine, a connection and a transaction (one fsync)
    per entry; one transaction for a batch shares that cost. Its event watcher polls the
    run's shard, so no notification is skipped. PostgreSQL's opens a connection (no
    pool) and runs an INSERT and a NOTIFY per entry, see `_postgres_batch_writer`; the
    in-memory storage of ephemeral instances, see `_in_memory_batch_writer`.
    Exact types only: a subclass may store differently.
    """
    storage = instance.event_log_storage
    if type(storage) is SqliteEventLogStorage:
        return _SqliteBatchWriter(storage)
    if type(storage) is InMemoryEventLogStorage:
        return _InMemoryBatchWriter(storage)
    postgres = postgres_event_log()
    if postgres is not None and type(storage) is postgres.PostgresEventLogStorage:
        return _PostgresBatchWriter(storage, postgres.CHANNEL_NAME)
    return None


class _PostgresBatchWriter:
    """The entries' rows in one transaction: one INSERT of many rows (SQLAlchemy's
    "insertmanyvalues": one compiled statement, cached, not one compiled per batch),
    returning their ids, then one statement sending the notifications `store_event`
    sends, one per entry, `<run_id>_<storage id>` on `channel`, in storage order; all are
    delivered when the transaction commits.

    dagster-postgres' own watcher polls `get_records_for_run` after its cursor
    (`SqlPollingEventWatcher`) rather than listening; the NOTIFY serves processes of
    older versions reading the same database, whose watcher fetches the one entry a
    notification names. One notification per entry keeps those seeing every entry, for
    one round trip per batch.

    The storage's engine has no pool: each `run_connection` is a new connection to the
    server (its authentication included). One is kept from batch to batch instead, and
    dropped when a batch fails (the next batch, or its retry, opens another)."""

    def __init__(self, storage: Any, channel: str) -> None:
        import sqlalchemy as sa

        self._storage = storage
        self._channel = channel
        table = SqlEventLogStorageTable
        self._insert = table.insert().returning(
            table.c.run_id, table.c.id, sort_by_parameter_order=True
        )
        self._notify = sa.text(
            "SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) "
            "WITH ORDINALITY AS sent(payload, position) ORDER BY position"
        )
        self._fence_lock = sa.text("SELECT pg_advisory_xact_lock_shared(:space, :run)")
        # dagster-postgres' engine autocommits every statement; one transaction here.
        self._connection = KeptConnection(storage, isolation_level="READ COMMITTED")

    def __call__(
        self, run_id: str, entries: Sequence[Storable], before_commit: BeforeCommit | None = None
    ) -> None:
        rows = [_row(self._storage, entry) for entry in entries]
        conn = self._connection.get(run_id)
        try:
            with conn.begin():
                if before_commit is not None:
                    # Held until this transaction ends: the run process waits for it
                    # before it reads what a lost worker stored.
                    conn.execute(self._fence_lock, advisory_lock(run_id))
                stored = conn.execute(self._insert, rows)
                payloads = [f"{stored_run_id}_{storage_id}" for stored_run_id, storage_id in stored]
                conn.execute(self._notify, {"channel": self._channel, "payloads": payloads})
                if before_commit is not None:
                    before_commit()
        except BaseException:
            self.close()  # perhaps broken: not used again
            raise

    def close(self) -> None:
        self._connection.close()


class _InMemoryBatchWriter:
    """The ephemeral instance's event log is an in-memory SQLite database; its
    `store_event` takes a lock, opens a connection, runs two PRAGMAs, a transaction and
    an INSERT per entry, then counts the entry in `_storage_id` and calls the run's
    watchers (`watch`, kept in `_handlers`) with that cursor. Here: one connection,
    transaction and INSERT (executemany) per batch, then the same counting and calls,
    entry by entry."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage

    def __call__(
        self, run_id: str, entries: Sequence[Storable], before_commit: BeforeCommit | None = None
    ) -> None:
        storage = self._storage
        with storage.run_connection(run_id) as conn:  # one transaction
            _insert_rows(conn, storage, entries)
            if before_commit is not None:
                before_commit()
        for entry in map(decoded, entries):
            storage._storage_id += 1
            cursor = str(EventLogCursor.from_storage_id(storage._storage_id))
            for handler in list(storage._handlers[entry.run_id]):
                try:
                    handler(entry, cursor)
                except Exception:  # as store_event does: one watcher must not stop the run
                    logging.exception("Exception in callback for event watch on run %s.", run_id)

    def close(self) -> None:
        pass  # nothing is kept


class _SqliteBatchWriter:
    """The entries' rows in one transaction (`_insert_rows`).

    The storage's `run_connection` creates an engine and opens a connection for every
    use, under a lock of the storage's, and closing the last connection to a WAL
    database checkpoints it. Here one engine per run shard keeps its connection
    (SQLAlchemy's pool) from batch to batch. The shard is created through
    `run_connection`, as Dagster creates it, and again whenever its file was replaced
    or removed since (the kept connection would go on writing to the old file)."""

    def __init__(self, storage: Any) -> None:
        self._storage = storage
        #: Per run shard: its engine, and the file (device, inode) it was opened on.
        self._engines: dict[str, tuple[Any, tuple[int, int]]] = {}

    def __call__(
        self, run_id: str, entries: Sequence[Storable], before_commit: BeforeCommit | None = None
    ) -> None:
        with self._engine(run_id).begin() as conn:
            _insert_rows(conn, self._storage, entries)
            if before_commit is not None:
                before_commit()

    def close(self) -> None:
        engines, self._engines = self._engines, {}
        for engine, _ in engines.values():
            engine.dispose()

    def _engine(self, run_id: str) -> Any:
        path = self._storage.path_for_shard(run_id)
        kept = self._engines.get(run_id)
        if kept is not None:
            engine, opened = kept
            if _file_identity(path) == opened:
                return engine
            del self._engines[run_id]
            engine.dispose()
        import sqlalchemy as sa

        with self._storage.run_connection(run_id):
            pass  # the shard's tables exist from here on
        engine = sa.create_engine(
            self._storage.conn_string_for_shard(run_id),
            connect_args={"timeout": SQLITE_BUSY_SECONDS},
        )
        identity = _file_identity(path)
        if identity is not None:
            self._engines[run_id] = (engine, identity)
        return engine


def _insert_rows(conn: Any, storage: Any, entries: Sequence[Storable]) -> None:
    """One executemany of the rows `store_event` would insert. One cached single-row
    statement: SQLAlchemy would compile a multi-row VALUES statement anew for every
    batch size."""
    rows = [_row(storage, entry) for entry in entries]
    conn.execute(SqlEventLogStorageTable.insert(), rows)


def _file_identity(path: str) -> tuple[int, int] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return stat.st_dev, stat.st_ino
