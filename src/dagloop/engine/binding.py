"""Turning a callable into a `CallSpec`: which values to pass, in which argument.

Everything is decided once, before the run, so a parameter nothing can fill is a
`TaskBindingError` naming the task and the parameter instead of a `TypeError` halfway
through a run. At run time a call only indexes lists.
"""

from __future__ import annotations

import inspect
import types
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from .errors import TaskBindingError, did_you_mean
from .graph import NodePredicate
from .retry import RetryPolicy
from .tasks import Task


class Source(NamedTuple):
    """Where one argument of a call comes from."""

    #: True: the result of the node at `position`. False: slot `position` of the run's
    #: extras (a resource, the invoke parameter, a constant, a fan-out item), which
    #: `ExtraSlots` lays out and `ArgumentValues.extras` holds.
    from_result: bool
    position: int


def result_of(node: int) -> Source:
    return Source(True, node)


def extra_slot(slot: int) -> Source:
    return Source(False, slot)


@dataclass(slots=True)
class CallSpec:
    """How the engine calls one node's function."""

    fn: Callable[..., Any]
    is_async: bool
    args: tuple[Source, ...] = ()
    kwargs: tuple[tuple[str, Source], ...] = ()
    timeout: float | None = None
    retry: RetryPolicy | None = None
    when: NodePredicate | None = None
    #: An async function called with no arguments and no timeout: the scheduler's
    #: fastest path.
    bare_coroutine: bool = False

    def __post_init__(self) -> None:
        self.bare_coroutine = (
            self.is_async and not self.args and not self.kwargs and self.timeout is None
        )


class ExtraSlots:
    """Values that are not node results: resources by name, the invoke parameter, constants."""

    PARAMETER = ("parameter", None)

    def __init__(self) -> None:
        self.specs: list[tuple[str, Any]] = []
        self._resource_slots: dict[str, Source] = {}
        self._parameter_slot: Source | None = None

    def resource(self, name: str) -> Source:
        if name not in self._resource_slots:
            self._resource_slots[name] = self._add(("resource", name))
        return self._resource_slots[name]

    def parameter(self) -> Source:
        if self._parameter_slot is None:
            self._parameter_slot = self._add(self.PARAMETER)
        return self._parameter_slot

    def constant(self, value: Any) -> Source:
        return self._add(("constant", value))

    def _add(self, spec: tuple[str, Any]) -> Source:
        self.specs.append(spec)
        return extra_slot(len(self.specs) - 1)

    def resolve(self, resources: Mapping[str, Any], parameter: Any) -> list[Any]:
        values: list[Any] = []
        for kind, payload in self.specs:
            if kind == "resource":
                values.append(resources[payload])
            elif kind == "parameter":
                values.append(parameter)
            else:
                values.append(payload)
        return values


@dataclass(slots=True)
class ArgumentValues:
    """Everything one run can pass to a call, kept by where it comes from."""

    #: Node results by node index; fan-out children get theirs appended.
    results: list[Any]
    #: Values that are not node results, by slot; fan-out items get theirs appended.
    extras: list[Any]

    def add_extra(self, value: Any) -> Source:
        self.extras.append(value)
        return extra_slot(len(self.extras) - 1)

    def call_arguments(self, spec: CallSpec) -> tuple[list[Any], dict[str, Any]]:
        """The positional and keyword arguments of `spec`'s next call."""
        results = self.results
        extras = self.extras
        args = [results[s.position] if s.from_result else extras[s.position] for s in spec.args]
        kwargs = {
            k: results[s.position] if s.from_result else extras[s.position] for k, s in spec.kwargs
        }
        return args, kwargs


def unwrap(obj: object, node: str) -> tuple[Callable[..., Any], Task[..., Any] | None]:
    if obj is None:
        raise TaskBindingError(f"node {node!r} has no task; pass a callable for it")
    if isinstance(obj, Task):
        return obj.fn, obj
    if not callable(obj):
        raise TaskBindingError(f"task for node {node!r} must be callable, got {obj!r}")
    return obj, None


def is_async_callable(fn: Callable[..., Any]) -> bool:
    if inspect.iscoroutinefunction(fn):
        return True
    call = getattr(fn, "__call__", None)  # noqa: B004 - callable objects with async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _signature(fn: Callable[..., Any]) -> inspect.Signature | None:
    try:
        return inspect.signature(fn)
    except (TypeError, ValueError):
        # Some builtins have no introspectable signature; they get no injected arguments.
        return None


def bind_by_name(
    node: str,
    fn: Callable[..., Any],
    upstream: Mapping[str, Source],
    resources: Collection[str],
    extras: ExtraSlots,
    other_nodes: Collection[str] = (),
) -> tuple[tuple[str, Source], ...]:
    """Fill each parameter whose name is an upstream node (its result) or a resource.

    Parameters with defaults may stay unfilled; `*args`/`**kwargs` are never filled.
    """
    if takes_no_parameters(fn):
        return ()
    signature = _signature(fn)
    if signature is None:
        return ()
    bound: list[tuple[str, Source]] = []
    for param in signature.parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        name = param.name
        source: Source | None = None
        if name in upstream:
            source = upstream[name]
        elif name in resources:
            source = extras.resource(name)
        if source is not None:
            if param.kind is param.POSITIONAL_ONLY:
                raise TaskBindingError(
                    f"task for node {node!r}: parameter {name!r} is positional-only, but "
                    "dagloop passes upstream results and resources by keyword"
                )
            bound.append((name, source))
        elif param.default is param.empty:
            raise TaskBindingError(
                _unsatisfied(node, fn, name, upstream.keys(), resources, other_nodes)
            )
    return tuple(bound)


def _unsatisfied(
    node: str,
    fn: Callable[..., Any],
    param: str,
    upstream: Collection[str],
    resources: Collection[str],
    other_nodes: Collection[str],
) -> str:
    shown_up = ", ".join(repr(u) for u in sorted(upstream)) or "none"
    shown_res = ", ".join(repr(r) for r in sorted(resources)) or "none"
    message = (
        f"task {_describe(fn)} of node {node!r} has parameter {param!r} that cannot be "
        f"satisfied: it is neither an upstream node (upstream: {shown_up}) nor a resource "
        f"(resources: {shown_res}) and has no default"
    )
    if param in other_nodes:
        message += (
            f"; {param!r} is a node, add the edge {param!r} -> {node!r} to receive its result"
        )
    else:
        hint = did_you_mean(param, [*upstream, *resources])
        if hint.startswith("; did you mean"):
            message += hint
    return message


def bind_explicit(
    node: str,
    fn: Callable[..., Any],
    args: Sequence[Source],
    kwargs: Mapping[str, Source],
    resources: Collection[str],
    extras: ExtraSlots,
) -> tuple[tuple[Source, ...], tuple[tuple[str, Source], ...]]:
    """Check that `fn(*args, **kwargs)` is a valid call once parameters named like
    resources (and not already given) are added."""
    signature = _signature(fn)
    final_kwargs = dict(kwargs)
    if signature is not None:
        try:
            partial = signature.bind_partial(*args, **kwargs)
        except TypeError as exc:
            raise TaskBindingError(f"node {node!r}: cannot call {_describe(fn)}: {exc}") from None
        for param in signature.parameters.values():
            if (
                param.name not in partial.arguments
                and param.name in resources
                and param.kind in (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY)
            ):
                final_kwargs[param.name] = extras.resource(param.name)
        try:
            signature.bind(*args, **final_kwargs)
        except TypeError as exc:
            raise TaskBindingError(
                f"node {node!r}: cannot call {_describe(fn)}: {exc} "
                f"(resources: {', '.join(sorted(resources)) or 'none'})"
            ) from None
    return tuple(args), tuple(final_kwargs.items())


def _describe(fn: Callable[..., Any]) -> str:
    name = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None)
    if not isinstance(name, str):
        return repr(fn)
    # "outer.<locals>.parse" reads better as "parse".
    return f"{name.rsplit('<locals>.', 1)[-1]}()"


_SpecKey = tuple[int, int, tuple[Source, ...], tuple[tuple[str, Source], ...]]


class SpecFactory:
    """Builds `CallSpec`s, sharing one object among nodes that call the same function
    with the same arguments and options (generated graphs often have thousands)."""

    def __init__(self, default_retry: RetryPolicy | None) -> None:
        self._default_retry = default_retry
        self._cache: dict[
            tuple[int, int, tuple[Source, ...], tuple[tuple[str, Source], ...]], CallSpec
        ] = {}

    def make(
        self,
        fn: Callable[..., Any],
        options: Task[..., Any] | None,
        args: tuple[Source, ...] = (),
        kwargs: tuple[tuple[str, Source], ...] = (),
    ) -> CallSpec:
        # id() keys are safe: `fn` and `options` stay referenced by the cached spec.
        key = (id(fn), id(options), args, kwargs)
        spec = self._cache.get(key)
        if spec is None or spec.fn is not fn:
            spec = CallSpec(
                fn=fn,
                is_async=is_async_callable(fn),
                args=args,
                kwargs=kwargs,
                timeout=options.timeout if options else None,
                retry=(
                    options.retry if options and options.retry is not None else self._default_retry
                ),
                when=options.when if options else None,
            )
            self._cache[key] = spec
        return spec


def takes_no_parameters(fn: Callable[..., Any]) -> bool:
    """Cheap exact test for plain functions: inspect.signature() is slow enough to
    matter when it runs once per node of a large graph."""
    code = getattr(fn, "__code__", None)
    return (
        type(fn) is types.FunctionType
        # A functools.wraps wrapper takes (*args, **kwargs) but has the signature of
        # what it wraps; inspect.signature() must see it.
        and not hasattr(fn, "__wrapped__")
        and code is not None
        and code.co_argcount == 0
        and code.co_kwonlyargcount == 0
    )


def bind_child(
    parent: str,
    fn: Callable[..., Any],
    options: Task[..., Any] | None,
    resource_sources: Mapping[str, Source],
    parent_spec: CallSpec,
) -> Callable[[Source], CallSpec]:
    """Plan the calls `fn(item, **resources)` of a fan-out's children.

    The item goes to the first positional parameter; later parameters are filled from
    resources by name. Children inherit the parent's timeout and retry policy unless
    `fn` is a `Task` that sets its own.
    """
    signature = _signature(fn)
    kwargs: list[tuple[str, Source]] = []
    if signature is not None:
        params = list(signature.parameters.values())
        positional = (
            inspect.Parameter.POSITIONAL_ONLY,
            inspect.Parameter.POSITIONAL_OR_KEYWORD,
            inspect.Parameter.VAR_POSITIONAL,
        )
        first = next((i for i, p in enumerate(params) if p.kind in positional), None)
        if first is None:
            raise TaskBindingError(
                f"fan_out() of node {parent!r}: {_describe(fn)} must take the item as its "
                "first positional parameter"
            )
        for param in params[first + 1 :]:
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                continue
            if param.name in resource_sources and param.kind is not param.POSITIONAL_ONLY:
                kwargs.append((param.name, resource_sources[param.name]))
            elif param.default is param.empty:
                raise TaskBindingError(
                    f"fan_out() of node {parent!r}: parameter {param.name!r} of "
                    f"{_describe(fn)} cannot be satisfied: children receive one item "
                    "positionally and resources by name "
                    f"(resources: {', '.join(sorted(resource_sources)) or 'none'})"
                )
    is_async = is_async_callable(fn)
    timeout = options.timeout if options and options.timeout is not None else parent_spec.timeout
    retry = options.retry if options and options.retry is not None else parent_spec.retry
    frozen_kwargs = tuple(kwargs)

    def child_spec(item_source: Source) -> CallSpec:
        return CallSpec(fn, is_async, (item_source,), frozen_kwargs, timeout, retry, None)

    return child_spec
