"""Optional dependencies: an ImportError that says which extra to install."""

from __future__ import annotations

import importlib
from types import ModuleType


class MissingExtraError(ImportError):
    """An optional dependency is not installed; the message names the pip extra."""


def require(module: str, *, extra: str, feature: str) -> ModuleType:
    """Import `module`, or raise a `MissingExtraError` naming the extra that installs it.

    Only a missing `module` itself is reported that way: an ImportError raised while an
    installed `module` imports (a broken install) propagates unchanged.
    """
    try:
        return importlib.import_module(module)
    except ImportError as error:
        missing = (error.name or "").split(".")[0]
        if missing != module.split(".")[0]:
            raise
        raise MissingExtraError(
            f"{feature} needs '{module}', which is not installed: pip install \"dagloop[{extra}]\"",
            name=module,
        ) from error
