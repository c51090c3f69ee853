"""The run process's writer of a run's event-log entries while dagloop executes it.

`RunEventLog` captures the run's entries and checks them (quarantined threads, duplicate
terminal events); one `EntryWriter` strategy writes them in order (`LoopBatchWriter`,
`ThreadBatchWriter`, `DirectWriter`); `RunStore` stores them with retries and reports
what cannot be stored. Why entries are batched and who writes them:
docs/performance.md ("How the event log is written").
"""

from dagloop.dagster.errors import EventLogWriteError
from dagloop.dagster.event_log.run_event_log import RunEventLog

__all__ = ["EventLogWriteError", "RunEventLog"]
