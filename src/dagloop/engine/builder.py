"""The builder style (async-dag's API): declare calls, get maximal parallelism.

    with build_dag(str) as g:          # the type of invoke's argument, for checkers
        a = g.add_node(fetch, g.parameter_node)
        b = g.add_node(parse, a)
        c = g.add_node(merge, a, b)
    result = await g.invoke("https://example.com")
    merged = c.extract_result(result)

Upstream results are passed positionally (or by keyword) exactly where the nodes are
given; the same node may be passed several times. Parameters not given that are named
like a resource receive that resource. `TaskManager` is the class (`TaskManager[str]()`
works too, then `sort()` or `build()` ends the definition).

`invoke` raises `NodeFailures` (an `ExceptionGroup` of the original exceptions) when
nodes fail; with `fail_fast` (the default) running siblings are cancelled first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Generic, TypeVar, overload

from .binding import (
    CallSpec,
    ExtraSlots,
    Source,
    SpecFactory,
    bind_explicit,
    result_of,
    unwrap,
)
from .errors import (
    ConfigError,
    DagloopError,
    DuplicateNodeError,
    ForeignResultError,
    GraphError,
    NodeFailures,
    did_you_mean,
)
from .executor import EXECUTE_OPTIONS, EXECUTOR_OPTIONS, AsyncDAGExecutor, split_options
from .graph import DAG
from .results import ExecutionResult, NodeStatus
from .sync_facade import run_sync
from .tasks import Task

ParamT = TypeVar("ParamT")
R = TypeVar("R")


class NodeRef(Generic[R]):
    """Handle to a node of a `TaskManager`; pass it to `add_node` to depend on it."""

    __slots__ = ("_owner", "index", "name")

    def __init__(self, owner: TaskManager[Any], index: int, name: str) -> None:
        self._owner = owner
        self.index = index
        self.name = name

    def extract_result(self, result: ExecutionResult) -> R:
        """This node's return value in `result`. Raises `ForeignResultError` if
        `result` comes from another graph, `NodeNotCompletedError` (chained to the
        original error) if the node did not complete."""
        self._owner._check_result_is_ours(result, self.name)
        value: R = result.value(self.name)
        return value

    def __repr__(self) -> str:
        return f"<NodeRef {self.name!r}>"


class ParameterNode(Generic[ParamT]):
    """Stands for the argument given to `invoke(argument)`."""

    __slots__ = ("_owner",)

    def __init__(self, owner: TaskManager[ParamT]) -> None:
        self._owner = owner

    def extract_result(self, result: ExecutionResult) -> ParamT:
        """The argument `invoke` was called with for `result`."""
        self._owner._check_result_is_ours(result, "parameter_node")
        value: ParamT = result.parameter
        return value

    def __repr__(self) -> str:
        return "<parameter_node>"


_Call = tuple[Callable[..., Any], Task[..., Any] | None, tuple[Any, ...], dict[str, Any]]


class TaskManager(Generic[ParamT]):
    """Collects calls with `add_node`; `invoke` runs them. See the module docstring.

    `ParamT` is the type of `invoke`'s argument, for type checkers only.
    """

    def __init__(self, **options: Any) -> None:
        executor_options, execute_options = split_options(options, "build_dag()")
        if execute_options:
            raise ConfigError(
                f"{', '.join(sorted(execute_options))} belongs to invoke(), not build_dag()"
            )
        self._options = executor_options
        self._parameter: ParameterNode[ParamT] = ParameterNode(self)
        self._names: list[str] = []
        self._used_names: set[str] = set()
        self._suffixes: dict[str, int] = {}
        self._calls: list[_Call] = []
        self._built: tuple[AsyncDAGExecutor, list[CallSpec], ExtraSlots] | None = None

    @property
    def parameter_node(self) -> ParameterNode[ParamT]:
        return self._parameter

    @overload
    def add_node(
        self, fn: Callable[..., Awaitable[R]], *args: Any, name: str | None = ..., **kwargs: Any
    ) -> NodeRef[R]: ...
    @overload
    def add_node(
        self, fn: Callable[..., R], *args: Any, name: str | None = ..., **kwargs: Any
    ) -> NodeRef[R]: ...

    def add_node(
        self, fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any
    ) -> NodeRef[Any]:
        """Add the call `fn(*args, **kwargs)`. Each `NodeRef` argument is replaced by that
        node's result, `parameter_node` by the invoke argument; other values are passed
        as they are. Pass a `Task` to set a timeout, retries or a predicate."""
        if self._built is not None:
            raise GraphError("this graph is already built; add nodes before invoke()/build()")
        callable_fn, options = unwrap(fn, name or repr(fn))
        node_name = self._node_name(callable_fn, options, name)
        for value in (*args, *kwargs.values()):
            if isinstance(value, NodeRef | ParameterNode) and value._owner is not self:
                raise GraphError(
                    f"node {node_name!r} is given {value!r} from a different graph builder"
                )
        self._names.append(node_name)
        self._used_names.add(node_name)
        self._calls.append((callable_fn, options, args, kwargs))
        return NodeRef(self, len(self._names) - 1, node_name)

    def add_immediate_node(self, value: R, *, name: str | None = None) -> NodeRef[R]:
        """Add a node whose result is `value` (the same object on every invoke)."""
        return self.add_node(_immediate, value, name=name or self._numbered("immediate"))

    def _node_name(
        self, fn: Callable[..., Any], options: Task[..., Any] | None, name: str | None
    ) -> str:
        if name is not None:
            if not isinstance(name, str) or not name:
                raise GraphError(f"node names must be non-empty strings, got {name!r}")
            if name in self._used_names:
                raise DuplicateNodeError(name)
            return name
        base = (options.name if options else None) or getattr(fn, "__name__", None) or "node"
        if base == "<lambda>":
            base = "lambda"
        return self._numbered(base)

    def _numbered(self, base: str) -> str:
        # The same function may be added many times; later copies get a suffix. A
        # counter per base name makes naming each copy O(1); probing every suffix from
        # the first one again would make adding many copies quadratic.
        n = self._suffixes.get(base, 1)
        candidate = base if n == 1 else f"{base}#{n}"
        while candidate in self._used_names:
            n += 1
            candidate = f"{base}#{n}"
        self._suffixes[base] = n + 1
        return candidate

    def build(self) -> DAG:
        """Freeze the graph and check every call against its function's signature.
        Calling it again returns the same graph."""
        if self._built is None:
            builder = DAG.builder()
            for name in self._names:
                builder.add_node(name)
            for index, (_, _, args, kwargs) in enumerate(self._calls):
                for value in (*args, *kwargs.values()):
                    if isinstance(value, NodeRef):
                        builder.add_edge(value.name, self._names[index])
            dag = builder.build()
            executor = AsyncDAGExecutor(dag, **self._options)
            extras = ExtraSlots()
            factory = SpecFactory(executor.retries)
            specs: list[CallSpec] = []
            for index, (fn, options, args, kwargs) in enumerate(self._calls):
                arg_sources = [self._source(value, extras) for value in args]
                kw_sources = {key: self._source(value, extras) for key, value in kwargs.items()}
                bound_args, bound_kwargs = bind_explicit(
                    self._names[index], fn, arg_sources, kw_sources, executor.resources, extras
                )
                specs.append(factory.make(fn, options, bound_args, bound_kwargs))
            self._built = (executor, specs, extras)
        return self._built[0].dag

    def sort(self) -> None:
        """async-dag's name for `build()`: end the definition. A no-op once built
        (the `with build_dag()` block builds when it ends)."""
        self.build()

    def _source(self, value: Any, extras: ExtraSlots) -> Source:
        if isinstance(value, NodeRef):
            return result_of(value.index)
        if isinstance(value, ParameterNode):
            return extras.parameter()
        return extras.constant(value)

    @property
    def dag(self) -> DAG:
        return self.build()

    def _check_result_is_ours(self, result: ExecutionResult, what: str) -> None:
        if not isinstance(result, ExecutionResult):
            raise ForeignResultError(
                f"extract_result() of {what!r} takes the ExecutionResult that invoke() "
                f"returned, got {result!r}"
            )
        if self._built is None or result.dag is not self._built[0].dag:
            raise ForeignResultError(
                f"extract_result() of {what!r} was given the result of another graph; "
                "use the result of this node's own graph"
            )

    async def invoke(self, argument: ParamT | None = None, **options: Any) -> ExecutionResult:
        """Run the graph; `argument` is what `parameter_node` stands for. Options:
        `timeout`, `cancel_event`. Several invokes may run at once, each with its own
        results.

        Raises `NodeFailures` (an `ExceptionGroup`) when nodes failed or timed out; its
        `result` attribute holds the run's `ExecutionResult`.
        """
        self.build()
        assert self._built is not None
        executor, specs, extras = self._built
        for key in options:
            if key in EXECUTOR_OPTIONS:
                raise ConfigError(f"{key!r} is an option of build_dag(), not of invoke()")
            if key not in EXECUTE_OPTIONS:
                raise ConfigError(
                    f"unknown option {key!r} for invoke(){did_you_mean(key, EXECUTE_OPTIONS)}"
                )
        result = await executor.run_compiled(
            specs,
            extras,
            parameter=argument,
            interrupt_on_failure=executor.fail_fast,
            **options,
        )
        if result.failed or result.timed_out:
            raise _failures(result)
        return result

    def invoke_sync(self, argument: ParamT | None = None, **options: Any) -> ExecutionResult:
        """`invoke` for code that is not async (runs a private event loop)."""
        result: ExecutionResult = run_sync(self.invoke(argument, **options))
        return result

    def __enter__(self) -> TaskManager[ParamT]:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.build()


#: The name dagloop used before it adopted async-dag's.
GraphBuilder = TaskManager


async def _immediate(value: Any) -> Any:
    return value


def _failures(result: ExecutionResult) -> NodeFailures:
    failed: list[tuple[str, Exception]] = []
    for name, error in result.errors().items():
        if result[name].status not in (NodeStatus.FAILED, NodeStatus.TIMED_OUT):
            continue
        if not isinstance(error, Exception):
            # An ExceptionGroup holds Exceptions only; a stray CancelledError is wrapped.
            wrapped = DagloopError(f"node {name!r} raised {error!r}")
            wrapped.__cause__ = error
            error = wrapped
        failed.append((name, error))
    return NodeFailures(failed, result)


@overload
def build_dag(parameter_type: None = None, /, **options: Any) -> TaskManager[Any]: ...
@overload
def build_dag(parameter_type: type[ParamT], /, **options: Any) -> TaskManager[ParamT]: ...


def build_dag(parameter_type: Any = None, /, **options: Any) -> TaskManager[Any]:
    """Start a builder-style graph, as a context manager that builds it when the block
    ends. `parameter_type` (as in async-dag's `build_dag(int)`) types `invoke`'s
    argument for checkers and is ignored at run time; `options` are `AsyncDAGExecutor`
    options (`resources`, `max_concurrency`, `retries`, `fail_fast`, ...)."""
    if parameter_type is not None and not _looks_like_a_type(parameter_type):
        raise ConfigError(
            "build_dag() takes the type of invoke's argument positionally (build_dag(int)) "
            f"and options by keyword; got the value {parameter_type!r}"
        )
    return TaskManager(**options)


def _looks_like_a_type(value: object) -> bool:
    # Classes, and typing constructs such as list[int], int | None or Literal["a"].
    return isinstance(value, type) or hasattr(value, "__origin__") or hasattr(value, "__args__")
