"""The Dagster-private classes, functions and constants dagloop uses as they are.

Dagster's executor contract is public (`Executor`, `@executor`), but running a plan
means reusing the machinery its own executors use: `ActiveExecution` for readiness,
retries, skips, dynamic mappings and concurrency limits; the step event sequence;
hooks; compute-log capture; interrupt capture. The private attributes dagloop reads on
Dagster's objects are reached through the other modules of this package.
"""

from __future__ import annotations

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
from dagster._core.execution.plan.handle import ResolvedFromDynamicStepHandle, StepHandle
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
from dagster._core.log_manager import DagsterLogHandler, DagsterLogManager
from dagster._core.storage.cloud_storage_compute_log_manager import (
    CloudStorageComputeLogManager,
)
from dagster._core.storage.compute_log_manager import CapturedLogContext, ComputeIOType
from dagster._core.storage.event_log import InMemoryEventLogStorage, SqlEventLogStorageTable
from dagster._core.storage.event_log.sql_event_log import SqlEventLogStorage
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.local_compute_log_manager import LocalComputeLogManager
from dagster._core.storage.tags import RESUME_RETRY_TAG
from dagster._core.system_config.objects import ResolvedRunConfig
from dagster._utils.error import serializable_error_info_from_exc_info
from dagster._utils.interrupts import pop_captured_interrupt

__all__ = [
    "ASSET_CHECK_EVENTS",
    "ASSET_EVENTS",
    "EVENT_TYPE_TO_PIPELINE_RUN_STATUS",
    "PIPELINE_EVENTS",
    "RESUME_RETRY_TAG",
    "ActiveExecution",
    "CapturedLogContext",
    "CloudStorageComputeLogManager",
    "ComputeIOType",
    "DagsterEvent",
    "DagsterEventType",
    "DagsterExecutionInterruptedError",
    "DagsterLogHandler",
    "DagsterLogManager",
    "EngineEventData",
    "ErrorSource",
    "EventLogCursor",
    "EventLogEntry",
    "ExecuteRunWithPlanIterable",
    "ExecutionPlan",
    "ExecutionStep",
    "Executor",
    "IAttachDifferentObjectToOpContext",
    "InMemoryEventLogStorage",
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
    "ScopedResourcesBuilder",
    "SqlEventLogStorage",
    "SqlEventLogStorageTable",
    "SqliteEventLogStorage",
    "StepDependencyConfig",
    "StepExecutionContext",
    "StepHandle",
    "UnresolvedMappedExecutionStep",
    "core_execute_in_process",
    "create_compute_log_file_key",
    "create_execution_plan",
    "dagster_event_sequence_for_step",
    "execute_plan_iterator",
    "execute_run_iterator",
    "get_retries_config",
    "get_step_dependency_config_field",
    "get_tag_concurrency_limits_config",
    "merge_run_tags",
    "multiple_process_executor_requirements",
    "pop_captured_interrupt",
    "serializable_error_info_from_exc_info",
    "step_failure_event_from_exc_info",
    "trigger_hooks",
    "type_check_and_normalize_args",
]
