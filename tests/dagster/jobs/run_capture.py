"""A run that receives SIGINT while a step runs; its steps report whether the run-level
compute log capture is complete when they run (tests/dagster/test_compute_logs.py)."""

import os
import signal
import time

import dagster as dg

from dagloop.dagster import async_executor

#: The metadata key under which each step reports what it saw.
COMPLETE = "run_capture_complete"


def _run_capture_complete(context: dg.OpExecutionContext) -> bool:
    """Whether the run-level capture (the run's first LOGS_CAPTURED) has ended."""
    instance = context.instance
    first = instance.all_logs(context.run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)[0]
    event = first.dagster_event
    assert event is not None
    manager = instance.compute_log_manager
    log_key = manager.build_log_key_for_run(context.run_id, event.logs_captured_data.file_key)
    return manager.is_capture_complete(log_key)


@dg.op
def before_the_signal(context: dg.OpExecutionContext) -> None:
    context.add_output_metadata({COMPLETE: _run_capture_complete(context)})


@dg.op(ins={"after": dg.In(dg.Nothing)}, retry_policy=dg.RetryPolicy(max_retries=1))
def signalled(context: dg.OpExecutionContext) -> None:
    """The first attempt sends SIGINT to its own process and is interrupted (its retry
    policy turns that into a retry, as in the in-process executor); the retry reports."""
    if context.retry_number == 0:
        os.kill(os.getpid(), signal.SIGINT)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            time.sleep(0.05)
        raise dg.Failure("the interrupt never arrived")
    context.add_output_metadata({COMPLETE: _run_capture_complete(context)})


@dg.job(executor_def=async_executor)
def signalled_job():
    signalled(after=before_the_signal())
