"""What dagloop's PostgreSQL batch writer relies on in dagster-postgres, checked on a real
server: these fail loudly if dagster-postgres changes the shape the writer copies.

* `PostgresEventLogStorage.store_event` of a step event or a log writes one row of
  `event_logs` and nothing else, and sends one `NOTIFY run_events, '<run_id>_<id>'`.
* The batch writer (`_internals.run_shard_batch_writer`) stores the same rows and sends
  the same notifications, one per entry, delivered when its transaction commits.
* Entries the writer does not batch (asset, asset-check and run events) are the ones
  `store_event` or the instance write elsewhere too.

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import select
import uuid
from collections.abc import Iterator, Sequence
from typing import Any

import dagster as dg
import psycopg2
import pytest
from dagster_postgres.event_log import event_log as pg_event_log

from dagloop.dagster import async_executor
from dagloop.dagster._internals import (
    EventLogEntry,
    run_shard_batch_writer,
    writes_to_run_shard_only,
)
from tests.dagster.conftest import run_job

ET = dg.DagsterEventType
#: The columns the batch writer's INSERT fills (SqlEventLogStorage._event_to_row) and the
#: ones it reads back (run_id, id) for the notification.
EVENT_LOGS_COLUMNS = {
    "id",
    "run_id",
    "event",
    "dagster_event_type",
    "timestamp",
    "step_key",
    "asset_key",
    "partition",
}


@dg.asset(check_specs=[dg.AssetCheckSpec("positive", asset="checked_asset")])
def checked_asset(context: dg.AssetExecutionContext):
    context.log.info("materializing")
    yield dg.Output(1)
    yield dg.AssetCheckResult(passed=True)


@dg.op
def plain_op(context: dg.OpExecutionContext) -> int:
    context.log.warning("a log line")
    return 2


@dg.job(executor_def=async_executor)
def plain_job():
    plain_op()


shape_defs = dg.Definitions(
    assets=[checked_asset],
    jobs=[dg.define_asset_job("asset_job")],
    resources={"io_manager": dg.mem_io_manager},
    executor=async_executor,
)


def asset_job() -> dg.JobDefinition:
    return shape_defs.resolve_job_def("asset_job")


@pytest.fixture
def logged_entries(postgres_instance: dg.DagsterInstance) -> list[EventLogEntry]:
    """Every entry of two real runs (an op job, an asset job with a check) on PostgreSQL."""
    entries: list[EventLogEntry] = []
    for job in (plain_job, asset_job):
        outcome = run_job(job, postgres_instance)
        assert outcome.success
        records = postgres_instance.get_records_for_run(outcome.run_id, limit=10_000).records
        entries += [r.event_log_entry for r in records]
    return entries


def _connect(postgres_url: str) -> Any:
    conn = psycopg2.connect(postgres_url.replace("postgresql+psycopg2://", "postgresql://"))
    conn.autocommit = True
    return conn


@pytest.fixture
def db(postgres_url: str) -> Iterator[Any]:
    """A connection of our own to the test's database, to look at its tables."""
    conn = _connect(postgres_url)
    try:
        yield conn
    finally:
        conn.close()


@pytest.fixture
def listener(postgres_url: str) -> Iterator[Any]:
    """A connection LISTENing on dagster-postgres' channel, as its older watcher did."""
    conn = _connect(postgres_url)
    with conn.cursor() as cur:
        cur.execute(f"LISTEN {pg_event_log.CHANNEL_NAME}")
    try:
        yield conn
    finally:
        conn.close()


def _notifications(conn: Any, expected: int, timeout: float = 10) -> list[tuple[str, str]]:
    received: list[tuple[str, str]] = []
    while len(received) < expected:
        if not select.select([conn], [], [], timeout)[0]:
            break
        conn.poll()
        while conn.notifies:
            note = conn.notifies.pop(0)
            received.append((note.channel, note.payload))
    return received


def _query(db: Any, sql: str, *params: Any) -> list[dict[str, Any]]:
    with db.cursor() as cur:
        cur.execute(sql, params)
        names = [c.name for c in cur.description]
        return [dict(zip(names, row, strict=True)) for row in cur.fetchall()]


def _row_counts(db: Any) -> dict[str, int]:
    tables = _query(db, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {
        t["tablename"]: _query(db, f'SELECT count(*) AS n FROM "{t["tablename"]}"')[0]["n"]
        for t in tables
    }


def _rows(db: Any, run_id: str) -> list[dict[str, Any]]:
    return _query(db, "SELECT * FROM event_logs WHERE run_id = %s ORDER BY id", run_id)


def test_dagster_postgres_names_and_table_are_what_the_writer_uses(
    postgres_instance: dg.DagsterInstance, db: Any
) -> None:
    storage = postgres_instance.event_log_storage
    assert type(storage) is pg_event_log.PostgresEventLogStorage
    assert pg_event_log.CHANNEL_NAME == "run_events"
    assert run_shard_batch_writer(postgres_instance) is not None
    columns = _query(
        db, "SELECT column_name FROM information_schema.columns WHERE table_name = 'event_logs'"
    )
    assert {c["column_name"] for c in columns} == EVENT_LOGS_COLUMNS


def test_store_event_of_a_batchable_entry_writes_one_row_and_one_notification(
    postgres_instance: dg.DagsterInstance,
    logged_entries: list[EventLogEntry],
    listener: Any,
    db: Any,
) -> None:
    storage = postgres_instance.event_log_storage
    batchable = [e for e in logged_entries if writes_to_run_shard_only(e)]
    kinds = {e.dagster_event_type for e in batchable}
    assert {None, ET.STEP_START, ET.STEP_OUTPUT, ET.STEP_SUCCESS, ET.HANDLED_OUTPUT} <= kinds
    run_id = str(uuid.uuid4())
    for entry in batchable:
        before = _row_counts(db)
        storage.store_event(entry._replace(run_id=run_id))
        after = _row_counts(db)
        changed = {t: after[t] - before[t] for t in after if after[t] != before.get(t)}
        assert changed == {"event_logs": 1}, (entry.dagster_event_type, changed)
    ids = [row["id"] for row in _rows(db, run_id)]
    assert _notifications(listener, len(ids)) == [
        (pg_event_log.CHANNEL_NAME, f"{run_id}_{i}") for i in ids
    ]


def test_entries_not_batched_are_the_ones_stored_elsewhere_too(
    logged_entries: list[EventLogEntry],
) -> None:
    kept_out = {e.dagster_event_type for e in logged_entries if not writes_to_run_shard_only(e)}
    assert {
        ET.RUN_START,
        ET.RUN_SUCCESS,
        ET.ASSET_MATERIALIZATION,
        ET.ASSET_MATERIALIZATION_PLANNED,
        ET.ASSET_CHECK_EVALUATION,
        ET.ASSET_CHECK_EVALUATION_PLANNED,
    } <= kept_out
    for entry in logged_entries:
        event = entry.dagster_event
        if event is not None and (event.is_job_event or event.asset_key is not None):
            assert not writes_to_run_shard_only(entry), event.event_type


def test_batch_writer_stores_what_store_event_stores_and_notifies_each_entry(
    postgres_instance: dg.DagsterInstance,
    logged_entries: list[EventLogEntry],
    listener: Any,
    db: Any,
) -> None:
    storage = postgres_instance.event_log_storage
    write = run_shard_batch_writer(postgres_instance)
    assert write is not None
    batchable = [e for e in logged_entries if writes_to_run_shard_only(e)]
    one_by_one, batched = str(uuid.uuid4()), str(uuid.uuid4())
    for entry in batchable:
        storage.store_event(entry._replace(run_id=one_by_one))
    _notifications(listener, len(batchable))

    before = _row_counts(db)
    write(batched, [e._replace(run_id=batched) for e in batchable])
    after = _row_counts(db)
    changed = {t: after[t] - before[t] for t in after if after[t] != before.get(t)}
    assert changed == {"event_logs": len(batchable)}

    def comparable(rows: Sequence[dict[str, Any]], run_id: str) -> list[dict[str, Any]]:
        return [
            {k: (v.replace(run_id, "RUN") if isinstance(v, str) else v) for k, v in row.items()}
            | {"id": None}
            for row in rows
        ]

    stored = _rows(db, batched)
    assert comparable(stored, batched) == comparable(_rows(db, one_by_one), one_by_one)
    # One notification per entry, named as store_event names them, in storage order:
    # a watcher that fetches the entry a notification names still gets every entry.
    assert _notifications(listener, len(stored)) == [
        (pg_event_log.CHANNEL_NAME, f"{batched}_{row['id']}") for row in stored
    ]
    # Read back through Dagster's API, in the order written.
    records = postgres_instance.get_records_for_run(batched, limit=10_000).records
    assert [r.event_log_entry for r in records] == [e._replace(run_id=batched) for e in batchable]


def test_a_failed_batch_writes_nothing(
    postgres_instance: dg.DagsterInstance, logged_entries: list[EventLogEntry], db: Any
) -> None:
    # One transaction: if any INSERT of a batch fails, none of the batch is stored (the
    # event-log writer then stores the entries one by one, without duplicates).
    write = run_shard_batch_writer(postgres_instance)
    assert write is not None
    run_id = str(uuid.uuid4())
    good = [e._replace(run_id=run_id) for e in logged_entries if writes_to_run_shard_only(e)]
    too_long = good[0]._replace(run_id="x" * 300)  # run_id is VARCHAR(255)
    entries = good * 300 + [too_long]  # more rows than one INSERT statement takes
    with pytest.raises(Exception, match="too long"):
        write(run_id, entries)
    assert _rows(db, run_id) == []
