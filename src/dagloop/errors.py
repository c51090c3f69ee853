"""The root of every error dagloop raises on purpose.

A module of its own, importing nothing of dagloop, so that the engine and the Dagster
integration derive their errors from the same class without importing each other:
`except dagloop.DagloopError` catches both.
"""

from __future__ import annotations


class DagloopError(Exception):
    """Base class of every error dagloop raises itself."""
