"""Every error the Dagster integration raises on purpose.

Each is a `DagloopError` (the root the engine's errors share) and also the Dagster or
builtin error a caller would naturally catch: `except dg.DagsterInvalidConfigError`,
`except TimeoutError` and `except dg.DagsterError` keep working for code that does not
know dagloop.
"""

from __future__ import annotations

import dagster as dg

from dagloop.errors import DagloopError


class ExecutorConfigError(DagloopError, dg.DagsterInvalidConfigError):
    """A value of the executor's config or of an op tag it reads that the schema's types
    alone cannot reject; raised when the run starts, before any step runs.

    `key` is the config key (`max_concurrent`, `dask.processes`, ...), or the tag when
    `op_name` is set: then `op_name` and `step_key` name the step that carries it.
    """

    def __init__(
        self,
        key: str,
        value: object,
        expectation: str,
        *,
        op_name: str | None = None,
        step_key: str | None = None,
    ) -> None:
        if op_name is None:
            message = f"Invalid value for execution config key '{key}': {value!r} ({expectation})."
        else:
            message = (
                f"Op '{op_name}' (step '{step_key}'): tag '{key}' must be {expectation}, "
                f"got {value!r}."
            )
        super().__init__(message, [], value)
        self.key = key
        self.value = value
        self.op_name = op_name
        self.step_key = step_key


class StepTimeoutError(DagloopError, TimeoutError):
    """A step ran past its time budget and was stopped; the step fails with it."""

    def __init__(self, op_name: str, step_key: str, budget: float) -> None:
        super().__init__(
            f"Op '{op_name}' (step '{step_key}') exceeded its time budget of {budget:g} s "
            "and was cancelled."
        )
        self.op_name = op_name
        self.step_key = step_key
        self.budget = budget


class EventLogWriteError(DagloopError, dg.DagsterError):
    """Entries of a run could not be stored in its event log."""
