"""A target of a suite: a measured value against its limit."""

from __future__ import annotations

from typing import Any


def target(
    tid: str,
    desc: str,
    value: float | None,
    limit: float,
    note: str = "",
    row: str = "",
    col: str = "",
) -> dict[str, Any]:
    """A target: met when value <= limit (None: not measured). row/col place it
    in the compact verdict matrix of the report."""
    met = None if value is None else value <= limit
    return {
        "id": tid,
        "description": desc,
        "value": value,
        "limit": limit,
        "met": met,
        "note": note,
        "row": row,
        "col": col,
    }
