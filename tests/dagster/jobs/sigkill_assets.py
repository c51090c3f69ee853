"""Async assets ending 25 ms apart, for the SIGKILL loss test, and a logger that notes
every materialization and step success the moment the run's logging call hands it on.

Dagster calls a job's loggers after the instance has taken the entry (its own storing
handler comes first): a line in `$DAGSTER_HOME/handed.log` means the entry was stored
(Dagster's in-process executor stores before returning) or queued to be stored
(dagloop writes step events behind). Each line is one `os.write` to a file opened for
appending, so it survives a SIGKILL of the process.

`kill_assets_job` runs the assets with dagloop, all at once (asset i sleeps i spacings);
`kill_assets_in_process_job` with Dagster's in-process executor, one after another (each
sleeps one spacing), so the test compares both under the same load.

No `from __future__ import annotations`: Dagster inspects `context` annotations.
"""

import asyncio
import logging
import os
import time

import dagster as dg

from dagloop.dagster import async_executor

COUNT = 100
SPACING = 0.025
IN_PROCESS_JOB = "kill_assets_in_process_job"
HANDED_LOG = "handed.log"
#: The entries the test follows: what re-execution and the asset graph rely on.
FOLLOWED = frozenset({"ASSET_MATERIALIZATION", "STEP_SUCCESS"})


class _HandedLines(logging.Handler):
    """Appends `<event type> <step key> <time>` per followed entry handed on."""

    def __init__(self, path: str) -> None:
        super().__init__(level=logging.DEBUG)
        self._fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)

    def emit(self, record: logging.LogRecord) -> None:
        event = getattr(record, "dagster_event", None)
        if event is None or event.event_type_value not in FOLLOWED or not event.step_key:
            return
        os.write(self._fd, f"{event.event_type_value} {event.step_key} {time.time()!r}\n".encode())


@dg.logger
def handed_entries(_init_context: dg.InitLoggerContext) -> logging.Logger:
    logger = logging.Logger("handed_entries", level=logging.DEBUG)
    logger.addHandler(_HandedLines(os.path.join(os.environ["DAGSTER_HOME"], HANDED_LOG)))
    return logger


def _staggered_asset(index: int) -> dg.AssetsDefinition:
    @dg.asset(name=f"due_{index}")
    async def due(context: dg.AssetExecutionContext) -> None:
        serial = context.job_name == IN_PROCESS_JOB
        await asyncio.sleep(SPACING if serial else SPACING * index)

    return due


#: A job's loggers run only when its run config names them.
_CONFIG = {"loggers": {"handed_entries": {}}}

defs = dg.Definitions(
    assets=[_staggered_asset(i) for i in range(COUNT)],
    jobs=[
        dg.define_asset_job("kill_assets_job", config=_CONFIG),
        dg.define_asset_job(IN_PROCESS_JOB, executor_def=dg.in_process_executor, config=_CONFIG),
    ],
    executor=async_executor,
    loggers={"handed_entries": handed_entries},
)
kill_assets_job = defs.resolve_job_def("kill_assets_job")
kill_assets_in_process_job = defs.resolve_job_def(IN_PROCESS_JOB)
