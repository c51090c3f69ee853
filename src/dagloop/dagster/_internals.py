"""Every Dagster-private name dagloop depends on, imported in this one module.

Dagster's executor contract is public (`Executor`, `@executor`), but running a plan
means reusing the machinery its own executors use: `ActiveExecution` for readiness,
retries, skips, dynamic mappings and concurrency limits; the step event sequence;
hooks; compute-log capture; interrupt capture. Keeping those imports here makes a
Dagster upgrade a one-file review; `tests/dagster/test_internals.py` fails loudly if
any name disappears.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from dagster._core.definitions.executor_definition import (
    multiple_process_executor_requirements,
)
from dagster._core.definitions.reconstruct import ReconstructableJob
from dagster._core.errors import DagsterExecutionInterruptedError
from dagster._core.events import (
    ASSET_CHECK_EVENTS,
    ASSET_EVENTS,
    EVENT_TYPE_TO_PIPELINE_RUN_STATUS,
    DagsterEvent,
    EngineEventData,
)
from dagster._core.events.log import EventLogEntry
from dagster._core.execution.api import (
    ExecuteRunWithPlanIterable,
    create_execution_plan,
    execute_plan_iterator,
)
from dagster._core.execution.compute_logs import create_compute_log_file_key
from dagster._core.execution.context.system import (
    PlanExecutionContext,
    PlanOrchestrationContext,
    StepExecutionContext,
)
from dagster._core.execution.context_creation_job import PlanExecutionContextManager
from dagster._core.execution.plan.active import ActiveExecution
from dagster._core.execution.plan.execute_plan import (
    _trigger_hook as trigger_hooks,
)
from dagster._core.execution.plan.execute_plan import (
    dagster_event_sequence_for_step,
)
from dagster._core.execution.plan.instance_concurrency_context import (
    InstanceConcurrencyContext,
)
from dagster._core.execution.plan.objects import ErrorSource, step_failure_event_from_exc_info
from dagster._core.execution.plan.plan import ExecutionPlan
from dagster._core.execution.plan.state import KnownExecutionState
from dagster._core.execution.plan.step import ExecutionStep
from dagster._core.execution.retries import RetryMode, get_retries_config
from dagster._core.execution.step_dependency_config import (
    StepDependencyConfig,
    get_step_dependency_config_field,
)
from dagster._core.execution.tags import get_tag_concurrency_limits_config
from dagster._core.executor.base import Executor
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.interrupts import pop_captured_interrupt


def step_failure_for_interrupt(step_context: StepExecutionContext, exc_info: Any) -> DagsterEvent:
    """The STEP_FAILURE Dagster itself reports for a step stopped by an interrupt."""
    event: DagsterEvent = step_failure_event_from_exc_info(
        step_context, exc_info, error_source=ErrorSource.INTERRUPT
    )
    return event


#: Event types SQLite also mirrors outside the run's shard (index shard, run status).
_MIRRORED_EVENT_TYPES = ASSET_EVENTS | ASSET_CHECK_EVENTS | set(EVENT_TYPE_TO_PIPELINE_RUN_STATUS)


def run_shard_batch_writer(
    instance: Any,
) -> Callable[[str, Sequence[EventLogEntry]], None] | None:
    """A writer of many entries of one run in one transaction, or None if the instance's
    event log has none we can use.

    SQLite's `store_event` opens an engine, a connection and a transaction (one fsync)
    per entry, ~4-7 ms here; one transaction for 100 entries costs ~0.25 ms an entry.
    Only SQLite's run shards are written this way, and only with entries that SQLite
    stores in the run's shard alone (see `writes_to_run_shard_only`): its event watcher
    polls that file, so no notification is skipped.
    """
    storage = instance.event_log_storage
    if type(storage) is not SqliteEventLogStorage:
        return None

    def write(run_id: str, entries: Sequence[EventLogEntry]) -> None:
        with storage.run_connection(run_id) as conn:
            # Multi-row INSERTs, within SQLite's limit of bound variables per statement.
            for start in range(0, len(entries), 200):
                conn.execute(storage.prepare_insert_event_batch(entries[start : start + 200]))

    return write


def writes_to_run_shard_only(entry: EventLogEntry) -> bool:
    """True for step events and logs; False for asset, asset-check and run-status events,
    which `store_event` also mirrors elsewhere (they are written one by one)."""
    event = entry.dagster_event
    return event is None or event.event_type not in _MIRRORED_EVENT_TYPES


__all__ = [
    "ActiveExecution",
    "DagsterEvent",
    "DagsterExecutionInterruptedError",
    "EngineEventData",
    "EventLogEntry",
    "ExecuteRunWithPlanIterable",
    "ExecutionPlan",
    "ExecutionStep",
    "Executor",
    "InstanceConcurrencyContext",
    "KnownExecutionState",
    "PlanExecutionContext",
    "PlanExecutionContextManager",
    "PlanOrchestrationContext",
    "ReconstructableJob",
    "ResolvedRunConfig",
    "RetryMode",
    "StepDependencyConfig",
    "StepExecutionContext",
    "create_compute_log_file_key",
    "create_execution_plan",
    "dagster_event_sequence_for_step",
    "execute_plan_iterator",
    "get_retries_config",
    "get_step_dependency_config_field",
    "get_tag_concurrency_limits_config",
    "multiple_process_executor_requirements",
    "pop_captured_interrupt",
    "run_shard_batch_writer",
    "serializable_error_info_from_exc_info",
    "step_failure_for_interrupt",
    "trigger_hooks",
    "writes_to_run_shard_only",
]
