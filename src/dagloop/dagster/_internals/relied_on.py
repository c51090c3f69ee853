"""The attributes of Dagster's objects that dagloop reads, writes or overrides: private
ones (`_x`, read only in this package), and the fields and methods of private classes
that plan mutation, resource sharing, log routing and batch writing depend on.

Dagster does not keep them stable across releases. `tests/dagster/test_internals.py`
builds each owner on the installed Dagster and checks every entry, naming the entry's
reader when one is gone; it also checks that this list and the readers' code agree."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

#: The Dagster objects the entries are read on, as the test builds them.
Owner = Literal[
    "DagsterInstance",
    "InMemoryEventLogStorage",
    "SqliteEventLogStorage",
    "PostgresEventLogStorage",
    "dagster_postgres.event_log.event_log",
    "PlanExecutionContext",
    "ExecutionData",
    "ScopedResourcesBuilder",
    "DagsterLogManager",
    "DagsterRun",
    "ExecutionPlan",
    "ActiveExecution",
    "UnresolvedMappedExecutionStep",
    "ExecutionStep",
    "StepHandle",
    "ResolvedFromDynamicStepHandle",
]


@dataclass(frozen=True)
class ReliedOn:
    """`owner.attribute`, which `reader` (`<module>.<name>` under `dagloop.dagster`) uses."""

    owner: Owner
    attribute: str
    reader: str


def _entries(owner: Owner, reader: str, *attributes: str) -> tuple[ReliedOn, ...]:
    return tuple(ReliedOn(owner, attribute, reader) for attribute in attributes)


PRIVATE_ATTRIBUTES: tuple[ReliedOn, ...] = (
    # Event-log storage (`storage`).
    *_entries("DagsterInstance", "_internals.storage.event_listeners", "_subscribers"),
    *_entries("SqliteEventLogStorage", "_internals.storage._row", "_event_to_row"),
    *_entries("SqliteEventLogStorage", "_internals.storage.encode_entry", "_event_to_row"),
    *_entries(
        "SqliteEventLogStorage",
        "_internals.storage._SqliteBatchWriter",
        "run_connection",
        "conn_string_for_shard",
        "path_for_shard",
    ),
    *_entries("InMemoryEventLogStorage", "_internals.storage._row", "_event_to_row"),
    *_entries(
        "InMemoryEventLogStorage",
        "_internals.storage._InMemoryBatchWriter",
        "run_connection",
        "_storage_id",
        "_handlers",
    ),
    *_entries(
        "PostgresEventLogStorage",
        "_internals.storage._PostgresBatchWriter",
        "run_connection",
    ),
    *_entries("PostgresEventLogStorage", "_internals.storage._row", "_event_to_row"),
    *_entries(
        "dagster_postgres.event_log.event_log",
        "_internals.storage.run_shard_batch_writer",
        "PostgresEventLogStorage",
        "CHANNEL_NAME",
    ),
    # Shared resources (`resources`).
    *_entries(
        "PlanExecutionContext", "_internals.resources.share_scoped_resources", "_execution_data"
    ),
    *_entries(
        "ExecutionData",
        "_internals.resources.share_scoped_resources",
        "scoped_resources_builder",
        "_replace",
    ),
    *_entries(
        "ScopedResourcesBuilder",
        "_internals.resources.share_scoped_resources",
        "resource_instance_dict",
        "contains_generator",
    ),
    # Overridden: under another name every context would build its own resources again.
    *_entries("ScopedResourcesBuilder", "_internals.resources._SharedScopedResources", "build"),
    # Log managers (`log_manager`, `python_logs`).
    *_entries(
        "PlanExecutionContext", "_internals.log_manager.replace_run_log_manager", "_log_manager"
    ),
    *_entries("DagsterLogManager", "_internals.log_manager.dagster_handler", "_dagster_handler"),
    *_entries("DagsterLogManager", "_internals.log_manager.managed_loggers", "_managed_loggers"),
    # Overridden: under another name Dagster would attach each step's handler again.
    *_entries(
        "DagsterLogManager",
        "python_logs.RoutedLogManager",
        "with_tags",
        "begin_python_log_capture",
        "end_python_log_capture",
    ),
    # Plans (`plan`).
    *_entries("DagsterRun", "_internals.plan.run_with_steps_to_execute", "_replace"),
    *_entries(
        "ExecutionPlan",
        "_internals.plan.mapped_steps_by_dynamic_output",
        "step_handles_to_execute",
        "step_dict",
    ),
    *_entries(
        "UnresolvedMappedExecutionStep",
        "_internals.plan.mapped_steps_by_dynamic_output",
        "resolved_by_step_keys",
        "resolved_by_step_key",
        "resolved_by_output_name",
    ),
    *_entries("ActiveExecution", "_internals.plan.resolve_mapping_key_ahead", "_pending"),
    *_entries(
        "ExecutionPlan",
        "_internals.plan._add_mapped_steps",
        "step_dict",
        "step_dict_by_key",
        "executable_map",
    ),
    *_entries("UnresolvedMappedExecutionStep", "_internals.plan._add_mapped_steps", "resolve"),
    *_entries("StepHandle", "_internals.plan.resolve_step_ahead", "parse_from_key"),
    *_entries(
        "ResolvedFromDynamicStepHandle",
        "_internals.plan.resolve_step_ahead",
        "unresolved_form",
        "mapping_key",
    ),
    *_entries("ExecutionPlan", "_internals.plan.resolve_step_ahead", "step_dict"),
    *_entries(
        "UnresolvedMappedExecutionStep",
        "_internals.plan.resolve_step_ahead",
        "resolved_by_step_keys",
        "resolved_by_step_key",
        "resolved_by_output_name",
    ),
    *_entries(
        "ExecutionStep",
        "_internals.plan.resolve_mapping_key_ahead",
        "get_execution_dependency_keys",
    ),
)
