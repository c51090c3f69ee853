"""Every default of the executor's config is stated once, on its dataclass; the config
schema reads it from there."""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any


def dataclass_default(owner: type, name: str) -> Any:
    """The default of field `name` of dataclass `owner`, for the schema's `default_value`."""
    assert is_dataclass(owner), owner
    (field,) = [field for field in fields(owner) if field.name == name]
    assert field.default is not MISSING, f"{owner.__name__}.{name} has no plain default"
    return field.default
