"""Every default of the executor's config is stated once, on its dataclass; the config
schema reads it from there, and an enum's values from the `Literal` the dataclass uses."""

from __future__ import annotations

from dataclasses import MISSING, fields, is_dataclass
from typing import Any, get_args

import dagster as dg


def dataclass_default(owner: type, name: str) -> Any:
    """The default of field `name` of dataclass `owner`, for the schema's `default_value`."""
    assert is_dataclass(owner), owner
    (field,) = [field for field in fields(owner) if field.name == name]
    assert field.default is not MISSING, f"{owner.__name__}.{name} has no plain default"
    return field.default


#: A schema row of one of the dataclass's fields: its config type and its description.
OptionRow = tuple[Any, str]


def schema_from_table(owner: type, table: dict[str, OptionRow | dg.Field]) -> dict[str, Any]:
    """The config schema of `table`, in its order: an `OptionRow` becomes a field with
    the default of `owner`'s field of the same name; a `dg.Field` stands as it is."""
    return {
        name: row
        if isinstance(row, dg.Field)
        else dg.Field(row[0], default_value=dataclass_default(owner, name), description=row[1])
        for name, row in table.items()
    }


def choice(name: str, values: Any) -> dg.Enum:
    """A config enum named `name` of the values of the `Literal` type `values`."""
    return dg.Enum(name, [dg.EnumValue(value) for value in get_args(values)])
