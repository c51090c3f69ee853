"""The run-level capture: the process's stdout/stderr captured once for the run.

As Dagster's in-process executor does, the instance's compute log manager captures the
process (`capture_logs`, which redirects its file descriptors) under one log key of the
run. It keeps everything no step capture takes (`step_captures.py`): writes outside any
step, file-descriptor level writes (C extensions, subprocesses), hooks, and every
step's output with `compute_logs: per_run` (of the steps this process runs: a Dask
worker's steps are captured there).
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType

from dagloop.dagster._internals import (
    DagsterEvent,
    EngineEventData,
    ExecutionStep,
    PlanExecutionContext,
    create_compute_log_file_key,
    serializable_error_info_from_exc_info,
)
from dagloop.dagster.compute_logs.step_captures import StepLogs

Emit = Callable[[DagsterEvent], None]


@dataclass(eq=False)
class RunLogCapture:
    """The run's capture, entered for the run (in the orchestrator's ExitStack) and ended
    early by `end()` when a signal arrives.

    Enter it after `open_for_run` (whose terminal copies must be taken before the file
    descriptors are redirected). On entering, a LOGS_CAPTURED event naming the steps the
    UI finds here (`StepLogs.run_capture_step_keys`) is emitted; a failure to start the
    capture is reported as an engine event and the run goes on uncaptured.
    """

    _job_context: PlanExecutionContext
    _steps: Iterable[ExecutionStep]
    _step_logs: StepLogs
    _emit: Emit
    _capture: ExitStack = field(init=False, default_factory=ExitStack)

    def __enter__(self) -> RunLogCapture:
        try:
            self._start()
        except BaseException:
            # Not entered into the caller's stack: what was started ends here.
            self._capture.__exit__(*sys.exc_info())
            raise
        return self

    def _start(self) -> None:
        job_context = self._job_context
        manager = job_context.instance.compute_log_manager
        step_keys = self._step_logs.run_capture_step_keys(self._steps)
        file_key = create_compute_log_file_key()
        log_key = manager.build_log_key_for_run(job_context.run_id, file_key)
        try:
            log_context = self._capture.enter_context(manager.capture_logs(log_key))
            self._emit(DagsterEvent.capture_logs(job_context, step_keys, log_key, log_context))
        except Exception:
            self._emit(
                DagsterEvent.engine_event(
                    job_context,
                    "Exception while setting up compute log capture",
                    EngineEventData(error=serializable_error_info_from_exc_info(sys.exc_info())),
                )
            )

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> bool:
        return bool(self._capture.__exit__(exc_type, exc, traceback))

    def end(self) -> None:
        """A signal arrived: what the run reports while its steps wind down (their
        failures, an abandonment after the grace period) goes to the real console again.
        The capture mirrors the run's output to the console with a `tail` process in the
        terminal's process group, which the terminal's Ctrl-C has just killed; Dagster's
        in-process executor ends the capture at once on an interrupt too. Ending twice,
        or before entering, does nothing."""
        try:
            self._capture.close()
        except Exception:
            with contextlib.suppress(Exception):
                self._emit(
                    DagsterEvent.engine_event(
                        self._job_context,
                        "Exception while cleaning up compute log capture",
                        EngineEventData(
                            error=serializable_error_info_from_exc_info(sys.exc_info())
                        ),
                    )
                )


__all__ = ["RunLogCapture"]
