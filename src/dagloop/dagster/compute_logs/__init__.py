"""Compute logs: each step's stdout/stderr, and the run's, through the instance's
compute log manager.

With `compute_logs: per_step` (the default), each step attempt that writes gets its own
capture under its own log key (`step_captures.py`, stored by `backends.py`, routed by
`routing.py`, flushed by `flusher.py`), and a LOGS_CAPTURED event naming that one step
tells the UI where its logs are. The run-level capture (`run_capture.py`) keeps the rest;
with `per_run` it keeps everything.
"""

from dagloop.dagster.compute_logs.routing import step_capture
from dagloop.dagster.compute_logs.run_capture import RunLogCapture
from dagloop.dagster.compute_logs.step_captures import (
    ComputeLogs,
    StepCapture,
    StepLogs,
    open_for_run,
)

__all__ = [
    "ComputeLogs",
    "RunLogCapture",
    "StepCapture",
    "StepLogs",
    "open_for_run",
    "step_capture",
]
