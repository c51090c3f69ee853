"""Every Dagster-private name dagloop depends on, imported in this one module.

Dagster's executor contract is public (`Executor`, `@executor`), but running a plan
means reusing the machinery its own executors use: `ActiveExecution` for readiness,
retries, skips, dynamic mappings and concurrency limits; the step event sequence;
hooks; compute-log capture; interrupt capture. Keeping those imports here makes a
Dagster upgrade a one-file review; `tests/dagster/test_internals.py` fails loudly if
any name disappears.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

from dagster._config.pythonic_config import IAttachDifferentObjectToOpContext
from dagster._core.definitions.executor_definition import (
    multiple_process_executor_requirements,
)
from dagster._core.definitions.job_base import InMemoryJob
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.definitions.scoped_resources_builder import ScopedResourcesBuilder
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.event_api import EventLogCursor
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    PIPELINE_EVENTS,
    DagsterEvent,
    DagsterEventType,
    EngineEventData,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    execute_plan_iterator,
    execute_run_iterator,
)
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.execute_in_process import (
    core_execute_in_process,
    merge_run_tags,
    type_check_and_normalize_args,
)
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import (
    _trigger_hook as trigger_hooks,
)
from dagster._core.execution.plan.execute_plan import (
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.handle import ResolvedFromDynamicStepHandle
from dagster._core.execution.plan.instance_concurrency_context import (
    InstanceConcurrencyContext,
)
from dagster._core.execution.plan.objects import ErrorSource, step_failure_event_from_exc_info
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.plan.step import ExecutionStep, UnresolvedMappedExecutionStep
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.step_dependency_config import (
    StepDependencyConfig,
    get_step_dependency_config_field,
)
from dagster._core.execution.tags import get_tag_concurrency_limits_config
from dagster._core.executor.base import Executor
from dagster._core.log_manager import DagsterLogManager
from dagster._core.storage.cloud_storage_compute_log_manager import (
    CloudStorageComputeLogManager,
)
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log import InMemoryEventLogStorage, SqlEventLogStorageTable
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.tags import RESUME_RETRY_TAG
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.interrupts import pop_captured_interrupt


def step_failure_for_interrupt(step_context: StepExecutionContext, exc_info: Any) -> DagsterEvent:
    """The STEP_FAILURE Dagster itself reports for a step stopped by an interrupt."""
    event: DagsterEvent = step_failure_event_from_exc_info(
        step_context, exc_info, error_source=ErrorSource.INTERRUPT
    )
    return event


def warning_engine_event(
    context: StepExecutionContext | PlanExecutionContext, message: str, data: EngineEventData
) -> DagsterEvent:
    """An engine event of a step (or of the run, given a plan context), logged at WARNING
    (Dagster logs engine events at DEBUG, which a console or UI filtered to warnings
    hides)."""
    step = context.step if isinstance(context, StepExecutionContext) else None
    event = DagsterEvent(
        event_type_value=DagsterEventType.ENGINE_EVENT.value,
        job_name=context.job_name,
        step_handle=step.handle if step is not None else None,
        node_handle=step.node_handle if step is not None else None,
        step_kind_value=step.kind.value if step is not None else None,
        logging_tags=context.event_tags if isinstance(context, StepExecutionContext) else None,
        event_specific_data=data,
        message=message,
        pid=os.getpid(),
    )
    context.log.log_dagster_event(level=logging.WARNING, msg=message, dagster_event=event)
    return event


def event_listeners(instance: Any, run_id: str) -> list[Callable[[EventLogEntry], None]]:
    """The in-process subscribers of a run's entries (`instance.add_event_listener`), which
    `handle_new_event` calls after storing an entry."""
    subscribers: Any = instance._subscribers
    return list(subscribers.get(run_id, ()))


#: Event types whose `store_event` or `instance.handle_new_event` writes more than the
#: entry's row: SQLite mirrors asset, asset-check and run-status events into its index
#: shard; SQLite and PostgreSQL index asset events (asset_keys, asset_event_tags) and
#: asset-check events (asset_check_executions); the instance updates the run's status in
#: run storage for every run (job) event, RUN_DEQUEUED included.
_MIRRORED_EVENT_TYPES = (
    ASSET_EVENTS | ASSET_CHECK_EVENTS | PIPELINE_EVENTS | set(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)
)


def run_shard_batch_writer(
    instance: Any,
) -> Callable[[str, Sequence[EventLogEntry]], None] | None:
    """A writer of many entries of one run in one transaction, or None if the instance's
    event log has none we can use. Only for entries `writes_to_run_shard_only` accepts:
    for those, `store_event` writes one row of the event_logs table and nothing else.

    SQLite's `store_event` opens an engine, a connection and a transaction (one fsync)
    per entry, ~4-7 ms here; one transaction for 100 entries costs ~0.25 ms an entry.
    Its event watcher polls the run's shard, so no notification is skipped.

    PostgreSQL's opens a connection (no pool) and runs an INSERT and a NOTIFY per entry
    (~9 ms here; batched ~0.6-0.9 ms), see `_postgres_batch_writer`; the in-memory
    storage of ephemeral instances ~0.9 ms (batched ~0.3), see `_in_memory_batch_writer`.
    Exact types only: a subclass may store differently.
    """
    storage = instance.event_log_storage
    if type(storage) is SqliteEventLogStorage:
        return _sqlite_batch_writer(storage)
    if type(storage) is InMemoryEventLogStorage:
        return _in_memory_batch_writer(storage)
    postgres = _postgres_event_log()
    if postgres is not None and type(storage) is postgres.PostgresEventLogStorage:
        return _postgres_batch_writer(storage, postgres.CHANNEL_NAME)
    return None


def _postgres_event_log() -> Any:
    """dagster-postgres' event-log module, or None where it is not installed (it is not a
    dependency of dagloop: only PostgreSQL deployments have it)."""
    try:
        from dagster_postgres.event_log import event_log
    except ImportError:
        return None
    return event_log


def _postgres_batch_writer(
    storage: Any, channel: str
) -> Callable[[str, Sequence[EventLogEntry]], None]:
    """The entries' rows in one transaction: one INSERT of many rows (SQLAlchemy's
    "insertmanyvalues": one compiled statement, cached, not one compiled per batch),
    returning their ids, then one statement sending the notifications `store_event`
    sends, one per entry, `<run_id>_<storage id>` on `channel`, in storage order; all are
    delivered when the transaction commits.

    dagster-postgres' own watcher no longer listens (it polls `get_records_for_run` after
    its cursor, `SqlPollingEventWatcher`); it keeps the NOTIFY for processes of older
    versions reading the same database, whose watcher fetches the one entry a
    notification names. One notification per entry keeps those seeing every entry, for
    one round trip per batch.
    """
    import sqlalchemy as sa

    table = SqlEventLogStorageTable
    insert = table.insert().returning(table.c.run_id, table.c.id, sort_by_parameter_order=True)
    notify = sa.text(
        "SELECT pg_notify(:channel, payload) FROM unnest(CAST(:payloads AS text[])) "
        "WITH ORDINALITY AS sent(payload, position) ORDER BY position"
    )

    def write(run_id: str, entries: Sequence[EventLogEntry]) -> None:
        rows = [storage._event_to_row(entry) for entry in entries]
        with storage.run_connection(run_id) as conn:
            # dagster-postgres' engine autocommits every statement; one transaction here.
            conn = conn.execution_options(isolation_level="READ COMMITTED")
            with conn.begin():
                stored = conn.execute(insert, rows)
                payloads = [f"{stored_run_id}_{storage_id}" for stored_run_id, storage_id in stored]
                conn.execute(notify, {"channel": channel, "payloads": payloads})

    return write


def _in_memory_batch_writer(storage: Any) -> Callable[[str, Sequence[EventLogEntry]], None]:
    """The ephemeral instance's event log is an in-memory SQLite database; its
    `store_event` takes a lock, opens a connection, runs two PRAGMAs, a transaction and
    an INSERT per entry (~0.8 ms here), then counts the entry in `_storage_id` and calls
    the run's watchers (`watch`) with that cursor. Here: one connection, transaction and
    INSERT (executemany) per batch, then the same counting and calls, entry by entry."""

    def write(run_id: str, entries: Sequence[EventLogEntry]) -> None:
        _insert_rows(storage, run_id, entries)
        for entry in entries:
            storage._storage_id += 1
            cursor = str(EventLogCursor.from_storage_id(storage._storage_id))
            for handler in list(storage._handlers[entry.run_id]):
                try:
                    handler(entry, cursor)
                except Exception:  # as store_event does: one watcher must not stop the run
                    logging.exception("Exception in callback for event watch on run %s.", run_id)

    return write


def _sqlite_batch_writer(storage: Any) -> Callable[[str, Sequence[EventLogEntry]], None]:
    def write(run_id: str, entries: Sequence[EventLogEntry]) -> None:
        _insert_rows(storage, run_id, entries)

    return write


def _insert_rows(storage: Any, run_id: str, entries: Sequence[EventLogEntry]) -> None:
    """One executemany of the rows `store_event` would insert, in the transaction the
    storage's `run_connection` opens. One cached single-row statement: compiling a
    multi-row VALUES statement for every batch cost SQLAlchemy ~0.2 ms an entry."""
    rows = [storage._event_to_row(entry) for entry in entries]
    with storage.run_connection(run_id) as conn:
        conn.execute(SqlEventLogStorageTable.insert(), rows)


class _SharedScopedResources(ScopedResourcesBuilder):
    """Builds each set of resources once per run: Dagster's `build` makes a new namedtuple
    class (and a subclass of it) for every step, input and output context, ~0.2 ms of CPU
    and a few KB of cyclic garbage each, always holding the same resource objects."""

    def build(self, required_resource_keys: Any) -> Any:
        key = frozenset(required_resource_keys or ())
        shared: dict[frozenset[str], Any] = self.__dict__.setdefault("_shared", {})
        resources = shared.get(key)
        if resources is None:
            resources = shared[key] = super().build(required_resource_keys)
        return resources


def share_scoped_resources(job_context: PlanExecutionContext) -> bool:
    """Have the run's step contexts share one resources object per set of resource keys
    (see `_SharedScopedResources`). Not when a resource hands each context an object of
    its own making (`IAttachDifferentObjectToOpContext`), which may differ per call.
    True if done."""
    data = job_context._execution_data
    builder = data.scoped_resources_builder
    if type(builder) is not ScopedResourcesBuilder or any(
        isinstance(resource, IAttachDifferentObjectToOpContext)
        for resource in builder.resource_instance_dict.values()
    ):
        return False
    shared = _SharedScopedResources(builder.resource_instance_dict, builder.contains_generator)
    job_context._execution_data = data._replace(scoped_resources_builder=shared)
    return True


def replace_run_log_manager(job_context: PlanExecutionContext, manager: Any) -> Callable[[], None]:
    """Make `manager` the run's log manager (the one `for_step` derives every step's log
    manager from, with `with_tags`); returns what puts the old one back."""
    previous = job_context._log_manager
    job_context._log_manager = manager

    def restore() -> None:
        job_context._log_manager = previous

    return restore


def event_log_in_memory(instance: Any) -> bool:
    """True when the instance's event log lives in this process's memory (ephemeral
    instances): writing it costs CPU only, and a crash loses it all anyway."""
    return type(instance.event_log_storage) is InMemoryEventLogStorage


def mapped_steps_by_dynamic_output(plan: ExecutionPlan) -> dict[tuple[str, str], list[Any]]:
    """The unresolved mapped steps (`work[?]`) the plan executes, by the step key and
    output name of the one dynamic output each maps over. Chained maps
    (`fan().map(a).map(b)`) map over the same output."""
    found: dict[tuple[str, str], list[Any]] = {}
    for handle in plan.step_handles_to_execute:
        step = plan.step_dict.get(handle)
        if isinstance(step, UnresolvedMappedExecutionStep) and len(step.resolved_by_step_keys) == 1:
            source = (step.resolved_by_step_key, step.resolved_by_output_name)
            found.setdefault(source, []).append(step)
    return found


def resolve_mapping_key_ahead(
    plan: ExecutionPlan,
    active: ActiveExecution,
    mapped_steps: Sequence[Any],
    producer_key: str,
    output_name: str,
    mapping_key: str,
) -> list[str]:
    """Resolve one mapping key of a dynamic output before its producer has finished: the
    mapped steps of that key join the plan and become pending in `ActiveExecution`,
    exactly as its own resolution does at the producer's success
    (`_update_from_resolved_dynamic_outputs`, then `_update`), one key at a time and in
    O(1) each. A step already in the plan (a key the producer yielded before) is left
    alone; the producer's own resolution later finds these steps in place and skips
    them. Their dependencies leave out the producer, so that they are ready once their
    input is stored whichever `step_dependency_config` the run uses."""
    added: list[str] = []
    for unresolved in mapped_steps:
        for step in unresolved.resolve({producer_key: {output_name: [mapping_key]}}):
            if step.key in plan.step_dict_by_key:
                continue
            plan.step_dict[step.handle] = step
            plan.step_dict_by_key[step.key] = step
            plan.executable_map[step.key] = step.handle
            active._pending[step.key] = set(step.get_execution_dependency_keys()) - {producer_key}
            added.append(step.key)
    return added


def writes_to_run_shard_only(entry: EventLogEntry) -> bool:
    """True for step events and logs, which storing writes as one row of the run's event
    log and nothing else, on SQLite and PostgreSQL alike; False for asset, asset-check
    and run (job) events, which are also written elsewhere (they are written one by one,
    through the instance)."""
    event = entry.dagster_event
    return event is None or event.event_type not in _MIRRORED_EVENT_TYPES


__all__ = [
    "RESUME_RETRY_TAG",
    "ActiveExecution",
    "CapturedLogContext",
    "CloudStorageComputeLogManager",
    "ComputeIOType",
    "DagsterEvent",
    "DagsterEventType",
    "DagsterExecutionInterruptedError",
    "DagsterLogManager",
    "EngineEventData",
    "EventLogEntry",
    "ExecuteRunWithPlanIterable",
    "ExecutionPlan",
    "ExecutionStep",
    "Executor",
    "InMemoryJob",
    "InstanceConcurrencyContext",
    "KnownExecutionState",
    "LocalComputeLogManager",
    "PlanExecutionContext",
    "PlanExecutionContextManager",
    "PlanOrchestrationContext",
    "ReconstructableJob",
    "ResolvedFromDynamicStepHandle",
    "ResolvedRunConfig",
    "RetryMode",
    "StepDependencyConfig",
    "StepExecutionContext",
    "core_execute_in_process",
    "create_compute_log_file_key",
    "create_execution_plan",
    "dagster_event_sequence_for_step",
    "event_listeners",
    "event_log_in_memory",
    "execute_plan_iterator",
    "execute_run_iterator",
    "get_retries_config",
    "get_step_dependency_config_field",
    "get_tag_concurrency_limits_config",
    "mapped_steps_by_dynamic_output",
    "merge_run_tags",
    "multiple_process_executor_requirements",
    "pop_captured_interrupt",
    "replace_run_log_manager",
    "resolve_mapping_key_ahead",
    "run_shard_batch_writer",
    "serializable_error_info_from_exc_info",
    "share_scoped_resources",
    "step_failure_for_interrupt",
    "trigger_hooks",
    "type_check_and_normalize_args",
    "warning_engine_event",
    "writes_to_run_shard_only",
]
