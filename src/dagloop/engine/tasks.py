"""`Task`: a callable plus the per-node options the engine honours, and `fan_out`."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from typing import Any, Generic, ParamSpec, TypeVar, overload

from .errors import TaskBindingError
from .graph import NodePredicate
from .retry import RetryPolicy
from .validation import optional_seconds

P = ParamSpec("P")
R = TypeVar("R")


class Task(Generic[P, R]):
    """A function with node options. Calling the task calls the function unchanged, so a
    decorated function stays easy to unit-test.

    - `name`: node name (default: the function's `__name__`)
    - `timeout`: seconds per attempt; over budget the node ends TIMED_OUT
    - `retry`: a `RetryPolicy`, or a number of retries
    - `when`: predicate on the upstream results (a dict by node name); False skips the
      node and its descendants
    """

    __wrapped__: Callable[P, R]

    def __init__(
        self,
        fn: Callable[P, R],
        *,
        name: str | None = None,
        timeout: float | None = None,
        retry: RetryPolicy | int | None = None,
        when: NodePredicate | None = None,
    ) -> None:
        if isinstance(fn, Task):
            fn = fn.fn
        if not callable(fn):
            raise TaskBindingError(f"task must be callable, got {fn!r}")
        resolved = name if name is not None else getattr(fn, "__name__", None)
        if not isinstance(resolved, str) or not resolved or resolved == "<lambda>":
            if name is None:
                resolved = None
            else:
                raise TaskBindingError(f"task name must be a non-empty string, got {name!r}")
        if when is not None and not callable(when):
            raise TaskBindingError(f"when= of task {resolved!r} must be callable, got {when!r}")
        # __name__, __doc__, __module__, __qualname__ and __wrapped__ of the function,
        # so help(), docs tools and other decorators see it through the task. First,
        # so that our own attributes below win over any the function carries.
        functools.update_wrapper(self, fn)
        self.fn: Callable[P, R] = fn
        self.name: str | None = resolved
        self.timeout = optional_seconds(timeout, f"timeout of task {resolved!r}")
        self.retry = RetryPolicy.coerce(retry, f"retry of task {resolved!r}")
        self.when = when

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> R:
        return self.fn(*args, **kwargs)

    def __repr__(self) -> str:
        return f"<Task {self.name or self.fn!r}>"


@overload
def task(fn: Callable[P, R], /) -> Task[P, R]: ...
@overload
def task(
    fn: Callable[P, R],
    /,
    *,
    name: str | None = ...,
    timeout: float | None = ...,
    retry: RetryPolicy | int | None = ...,
    when: NodePredicate | None = ...,
) -> Task[P, R]: ...
@overload
def task(
    *,
    name: str | None = ...,
    timeout: float | None = ...,
    retry: RetryPolicy | int | None = ...,
    when: NodePredicate | None = ...,
) -> Callable[[Callable[P, R]], Task[P, R]]: ...


def task(
    fn: Callable[P, R] | None = None,
    /,
    *,
    name: str | None = None,
    timeout: float | None = None,
    retry: RetryPolicy | int | None = None,
    when: NodePredicate | None = None,
) -> Task[P, R] | Callable[[Callable[P, R]], Task[P, R]]:
    """Use as `@task`, `@task(timeout=5, retry=2)` or `task(fn, timeout=5)`."""
    make = functools.partial(Task, name=name, timeout=timeout, retry=retry, when=when)
    if fn is None:
        return make
    return make(fn)


class FanOut:
    """Returned by a task to run `fn(item)` once per item as child nodes named
    ``"<parent>[i]"``. The parent's result becomes the list of child results in item
    order, so a downstream node gathers them. `fn` may be a `Task` to give the children
    a timeout or a retry policy; other parameters of `fn` are filled from resources."""

    __slots__ = ("fn", "items")

    def __init__(self, fn: Callable[..., Any], items: Iterable[Any]) -> None:
        if not callable(fn):
            raise TaskBindingError(f"fan_out() needs a callable, got {fn!r}")
        self.fn = fn
        self.items = list(items)


def fan_out(fn: Callable[..., Any], items: Iterable[Any]) -> FanOut:
    """Return this from a task to map `fn` over `items` known only at run time."""
    return FanOut(fn, items)
