from __future__ import annotations

import itertools
import threading
from collections.abc import Iterable
from typing import Any

import pytest

from dagloop import DAG, Callbacks


def make_dag(nodes: Iterable[str], edges: Iterable[tuple[str, str]] = ()) -> DAG:
    return DAG.builder().add_nodes(list(nodes)).add_edges(list(edges)).build()


class Clock:
    """A monotonic counter: tests compare the order of events, never wall time."""

    def __init__(self) -> None:
        self._counter = itertools.count()
        self._lock = threading.Lock()

    def tick(self) -> int:
        with self._lock:
            return next(self._counter)


class Recorder(Callbacks):
    """Records every callback as (event, name, ...) in order."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_execution_start(self, total_nodes: int) -> None:
        self.events.append(("execution_start", total_nodes))

    def on_node_start(self, name: str) -> None:
        self.events.append(("start", name))

    def on_node_complete(self, name: str, result: Any) -> None:
        self.events.append(("complete", name, result))

    def on_node_error(self, name: str, error: BaseException) -> None:
        self.events.append(("error", name, error))

    def on_node_skip(self, name: str) -> None:
        self.events.append(("skip", name))

    def on_node_cancel(self, name: str) -> None:
        self.events.append(("cancel", name))

    def on_node_retry(self, name: str, attempt: int, error: BaseException, delay: float) -> None:
        self.events.append(("retry", name, attempt))

    def on_execution_end(self, result: Any) -> None:
        self.events.append(("execution_end",))

    def names(self, event: str) -> list[str]:
        return [e[1] for e in self.events if e[0] == event]


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def recorder() -> Recorder:
    return Recorder()
