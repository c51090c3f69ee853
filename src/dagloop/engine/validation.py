"""Checks shared by every option that takes a duration, a limit or a set of keys."""

from __future__ import annotations

import math
import os
import sys
import warnings
from collections.abc import Iterable, Mapping
from typing import Any

from .errors import ConfigError, did_you_mean


def positive_seconds(value: object, what: str) -> float:
    """A duration that must be a finite number greater than zero."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}")
    if math.isnan(value):
        raise ConfigError(f"{what} must be a number of seconds, got NaN")
    if value <= 0 or math.isinf(value):
        raise ConfigError(f"{what} must be greater than 0 and finite, got {value!r}")
    return float(value)


def optional_seconds(value: object, what: str) -> float | None:
    return None if value is None else positive_seconds(value, what)


def non_negative_seconds(value: object, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number of seconds, got {value!r}")
    if math.isnan(value) or math.isinf(value) or value < 0:
        raise ConfigError(f"{what} must be a finite number >= 0, got {value!r}")
    return float(value)


def positive_int(value: object, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    if value < 1:
        raise ConfigError(f"{what} must be a positive integer, got {value!r}")
    return value


def optional_positive_int(value: object, what: str) -> int | None:
    return None if value is None else positive_int(value, what)


def reject_unknown_keys(
    given: Mapping[str, Any],
    allowed: Iterable[str],
    where: str,
    elsewhere: Mapping[str, str] | None = None,
) -> None:
    """A `ConfigError` naming the first key of `given` that is not allowed. `elsewhere`
    maps options that exist, but on another call, to that call's name."""
    allowed_set = set(allowed)
    for key in given:
        if key in allowed_set:
            continue
        if elsewhere and key in elsewhere:
            raise ConfigError(f"{key!r} is an option of {elsewhere[key]}, not of {where}")
        raise ConfigError(f"unknown option {key!r} for {where}{did_you_mean(key, allowed_set)}")


_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def warn_from_caller(message: str, category: type[Warning] = UserWarning) -> None:
    """`warnings.warn` attributed to the first frame outside dagloop, so the warning
    points at the user's line whichever public entry point led here."""
    level = 2  # 1 would be this function, 2 its caller
    frame = sys._getframe(1)
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame = frame.f_back  # type: ignore[assignment]
        level += 1
    warnings.warn(message, category, stacklevel=level)
