"""`progress=True`: a live rich progress bar, implemented as ordinary callbacks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
)

from .callbacks import Callbacks

if TYPE_CHECKING:
    from .results import ExecutionResult


class RichProgress(Callbacks):
    """Counts nodes reaching a terminal state; failures are shown next to the bar."""

    def __init__(self, description: str = "dagloop", console: Console | None = None) -> None:
        self._description = description
        self._console = console
        self._progress: Progress | None = None
        self._task: TaskID | None = None
        self._total = 0
        self.failed = 0

    def on_execution_start(self, total_nodes: int) -> None:
        self._total = total_nodes
        self.failed = 0
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]}"),
            TimeElapsedColumn(),
            console=self._console,
            transient=False,
        )
        self._task = self._progress.add_task(self._description, total=total_nodes, failed="")
        self._progress.start()

    def _advance(self) -> None:
        if self._progress is not None and self._task is not None:
            failed = f"[red]{self.failed} failed" if self.failed else ""
            self._progress.update(self._task, advance=1, failed=failed)

    def on_node_expand(self, name: str, children: int) -> None:
        self._total += children
        if self._progress is not None and self._task is not None:
            self._progress.update(self._task, total=self._total)

    def on_node_complete(self, name: str, result: Any) -> None:
        self._advance()

    def on_node_error(self, name: str, error: BaseException) -> None:
        self.failed += 1
        self._advance()

    def on_node_skip(self, name: str) -> None:
        self._advance()

    def on_node_cancel(self, name: str) -> None:
        self._advance()

    def on_execution_end(self, result: ExecutionResult) -> None:
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
