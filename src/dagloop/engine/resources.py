"""Shared resources: opened once per execution, injected by parameter name, closed once.

Rules for each value of `resources={name: value}`:

- a callable is a factory, called once per execution (awaited if it returns an
  awaitable). If what it returns is a context manager (async or sync) it is entered and
  the value it yields is injected; it is exited when the execution ends, whatever the
  outcome. Classes are callables: `resources={"http": httpx.AsyncClient}` works.
- anything else (a semaphore, a dict of settings, an already open client) is injected
  as it is and left for its owner to close.
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping
from contextlib import AsyncExitStack
from typing import Any

from .errors import ConfigError, ResourceError


def validate_resources(resources: Mapping[str, Any] | None) -> dict[str, Any]:
    if resources is None:
        return {}
    if not isinstance(resources, Mapping):
        raise ConfigError(f"resources must be a mapping of name -> resource, got {resources!r}")
    for name in resources:
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"resource names must be valid parameter names, got {name!r}")
    return dict(resources)


async def open_resources(resources: Mapping[str, Any], stack: AsyncExitStack) -> dict[str, Any]:
    """Open every resource into `stack`; the caller closes the stack exactly once."""
    opened: dict[str, Any] = {}
    for name, spec in resources.items():
        try:
            opened[name] = await _open(spec, stack)
        except Exception as exc:
            raise ResourceError(f"resource {name!r} failed to open: {exc!r}") from exc
    return opened


async def _open(spec: Any, stack: AsyncExitStack) -> Any:
    if not callable(spec):
        return spec
    value = spec()
    if inspect.isawaitable(value):
        value = await value
    if hasattr(value, "__aenter__") and hasattr(value, "__aexit__"):
        return await stack.enter_async_context(value)
    if hasattr(value, "__enter__") and hasattr(value, "__exit__"):
        return stack.enter_context(value)
    return value
