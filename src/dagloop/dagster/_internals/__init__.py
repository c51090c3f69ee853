"""Every Dagster-private name dagloop depends on, reached through this one package.

Names imported from `dagster._...` live in `names`; code that reads or writes private
attributes of Dagster's objects lives in one module per concern: `storage` (event-log
listeners and batch writers), `fenced_writes` (the locks between a Dask worker's fenced
writes and the run process reading them), `plan` (plan and `ActiveExecution` changes for
streaming), `resources` (resources shared by a run's step contexts), `log_manager` (a
run's log manager and its parts), `events` (events built as Dagster builds its own).
`relied_on` lists every such attribute; `tests/dagster/test_internals.py` checks each
on the installed Dagster, so a Dagster upgrade fails CI naming what it broke.
"""

from __future__ import annotations

from dagloop.dagster._internals import names
from dagloop.dagster._internals.events import step_failure_for_interrupt, warning_engine_event
from dagloop.dagster._internals.fenced_writes import (
    WriteHold,
    discard_fenced_write_holds,
    fenced_write_hold,
    wait_for_fenced_writes,
)
from dagloop.dagster._internals.log_manager import (
    dagster_handler,
    managed_loggers,
    replace_run_log_manager,
)
from dagloop.dagster._internals.names import *  # noqa: F403  (listed once, in names.__all__)
from dagloop.dagster._internals.plan import (
    mapped_steps_by_dynamic_output,
    resolve_mapping_key_ahead,
    resolve_step_ahead,
    run_with_steps_to_execute,
)
from dagloop.dagster._internals.relied_on import PRIVATE_ATTRIBUTES, ReliedOn
from dagloop.dagster._internals.resources import share_scoped_resources
from dagloop.dagster._internals.storage import (
    EncodedEntry,
    Storable,
    decoded,
    encode_entry,
    event_listeners,
    event_log_in_memory,
    run_shard_batch_writer,
    writes_to_run_shard_only,
)

__all__ = [
    *names.__all__,
    "EncodedEntry",
    "PRIVATE_ATTRIBUTES",
    "Storable",
    "decoded",
    "encode_entry",
    "ReliedOn",
    "WriteHold",
    "dagster_handler",
    "discard_fenced_write_holds",
    "event_listeners",
    "fenced_write_hold",
    "event_log_in_memory",
    "managed_loggers",
    "mapped_steps_by_dynamic_output",
    "replace_run_log_manager",
    "resolve_mapping_key_ahead",
    "resolve_step_ahead",
    "run_shard_batch_writer",
    "run_with_steps_to_execute",
    "wait_for_fenced_writes",
    "share_scoped_resources",
    "step_failure_for_interrupt",
    "warning_engine_event",
    "writes_to_run_shard_only",
]
