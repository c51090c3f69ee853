"""Every error the engine raises on purpose.

Errors about bad input subclass both `DagloopError` and the builtin a caller would
naturally catch (`ValueError` for a malformed graph or option, `TypeError` for a task
that cannot be called), so `except ValueError` keeps working for code that does not
know dagloop.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable, Sequence
from typing import Any

# Re-exported: the root is shared with the Dagster integration's errors.
from ..errors import DagloopError as DagloopError


class GraphError(DagloopError, ValueError):
    """The graph is malformed; raised by `DAGBuilder.build()` before anything runs."""


class CycleError(GraphError):
    """The edges form a cycle. `cycle` lists it, first node repeated at the end."""

    def __init__(self, cycle: Sequence[str]) -> None:
        self.cycle = list(cycle)
        super().__init__(f"graph has a cycle: {' -> '.join(self.cycle)}")


class SelfLoopError(CycleError):
    """An edge goes from a node to itself: the shortest cycle, so `except CycleError`
    catches it too."""

    def __init__(self, node: str) -> None:
        self.node = node
        self.cycle = [node, node]
        GraphError.__init__(
            self, f"edge {node!r} -> {node!r} is a self-loop; a node cannot depend on itself"
        )


class DuplicateNodeError(GraphError):
    """Two nodes were given the same name."""

    def __init__(self, node: str) -> None:
        self.node = node
        super().__init__(f"node {node!r} is added twice; node names must be unique")


class UnknownNodeError(GraphError, KeyError):
    """A name does not belong to the graph."""

    def __init__(self, node: str, where: str, known: Iterable[str]) -> None:
        self.node = node
        message = f"{where} names unknown node {node!r}{did_you_mean(node, known)}"
        super().__init__(message)

    def __str__(self) -> str:
        # KeyError would otherwise repr() the message and wrap it in quotes.
        return str(self.args[0])


class TaskBindingError(DagloopError, TypeError):
    """A task is missing, not callable, or cannot be called with what the graph provides."""


class ConfigError(DagloopError, ValueError):
    """An option is out of range or unknown."""


class ResourceError(DagloopError):
    """A shared resource could not be opened; nothing ran."""


class NodeTimeoutError(DagloopError, TimeoutError):
    """Kept on the result of a node that ran past its budget."""

    def __init__(self, node: str, seconds: float, scope: str) -> None:
        self.node = node
        self.seconds = seconds
        self.scope = scope
        if scope == "node":
            message = f"node {node!r} exceeded its timeout of {seconds:g}s"
        else:
            message = (
                f"node {node!r} was still running when the execution timeout "
                f"of {seconds:g}s expired"
            )
        super().__init__(message)


class NodeNotCompletedError(DagloopError, LookupError):
    """`extract_result` was asked for the value of a node that did not complete."""


class ForeignResultError(GraphError):
    """`extract_result` was given the result of another graph (or of no graph)."""


class NodeFailures(ExceptionGroup[Exception], DagloopError):
    """Raised by the builder style's `invoke` when nodes failed or timed out.

    `exceptions` holds the original exception objects, the first failure first (as an
    `asyncio.TaskGroup` would), so `except* ValueError` works. `result` is the
    `ExecutionResult` of the run, for the values of the nodes that did complete.
    """

    result: Any
    failed_nodes: list[str]

    def __new__(cls, failures: Sequence[tuple[str, Exception]], result: Any = None) -> NodeFailures:
        names = ", ".join(repr(name) for name, _ in failures[:5])
        more = f" and {len(failures) - 5} more" if len(failures) > 5 else ""
        count = "1 node" if len(failures) == 1 else f"{len(failures)} nodes"
        self = super().__new__(
            cls, f"{count} failed: {names}{more}", [error for _, error in failures]
        )
        self.result = result
        self.failed_nodes = [name for name, _ in failures]
        return self

    def __init__(self, failures: Sequence[tuple[str, Exception]], result: Any = None) -> None:
        # ExceptionGroup takes (message, exceptions); __new__ has built both already.
        super().__init__(self.message, self.exceptions)


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """A `"; did you mean 'x'?"` suffix, or a short list of what exists."""
    known = sorted(candidates)
    close = difflib.get_close_matches(name, known, n=1)
    if close:
        return f"; did you mean {close[0]!r}?"
    if not known:
        return " (there are none)"
    shown = ", ".join(repr(k) for k in known[:10])
    more = f", ... ({len(known)} in all)" if len(known) > 10 else ""
    return f" (known: {shown}{more})"
