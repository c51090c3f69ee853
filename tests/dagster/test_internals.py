"""Dagster-private names dagloop relies on are all present in the installed Dagster,
and the installed Dagster is inside the range pyproject.toml declares."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

from dagloop.dagster import _internals

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_private_name_resolves() -> None:
    missing = [name for name in _internals.__all__ if getattr(_internals, name, None) is None]
    assert missing == []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_installed_dagster_is_inside_the_declared_range() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    (spec,) = [
        s for s in project["project"]["optional-dependencies"]["dagster"] if s.startswith("dagster")
    ]
    low, high = re.match(r"dagster>=([\d.]+),<([\d.]+)", spec).groups()  # type: ignore[union-attr]
    installed = _version(importlib.metadata.version("dagster"))
    assert _version(low) <= installed < _version(high)
