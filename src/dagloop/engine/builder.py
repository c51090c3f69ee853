"""The builder style: declare calls, get maximal parallelism.

    with build_dag() as g:
        a = g.add_node(fetch, g.parameter_node)
        b = g.add_node(parse, a)
        c = g.add_node(merge, a, b)
    result = await g.invoke("https://example.com")
    merged = c.extract_result(result)

Upstream results are passed positionally (or by keyword) exactly where the nodes are
given; the same node may be passed several times. Parameters not given that are named
like a resource receive that resource.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .binding import CallSpec, ExtraSlots, Source, SpecFactory, bind_explicit, unwrap
from .errors import ConfigError, DuplicateNodeError, GraphError, did_you_mean
from .executor import EXECUTE_OPTIONS, EXECUTOR_OPTIONS, AsyncDAGExecutor, split_options
from .graph import DAG
from .results import ExecutionResult
from .sync_facade import run_sync
from .tasks import Task


class NodeRef:
    """Handle to a node of a `GraphBuilder`; pass it to `add_node` to depend on it."""

    __slots__ = ("_owner", "index", "name")

    def __init__(self, owner: GraphBuilder, index: int, name: str) -> None:
        self._owner = owner
        self.index = index
        self.name = name

    def extract_result(self, result: ExecutionResult) -> Any:
        """This node's return value in `result`; raises `NodeNotCompletedError` (chained
        to the original error) if it did not complete."""
        return result.value(self.name)

    def __repr__(self) -> str:
        return f"<NodeRef {self.name!r}>"


class ParameterNode:
    """Stands for the argument given to `invoke(argument)`."""

    __slots__ = ("_owner",)

    def __init__(self, owner: GraphBuilder) -> None:
        self._owner = owner

    def __repr__(self) -> str:
        return "<parameter_node>"


class GraphBuilder:
    """Collects calls with `add_node`; `invoke` runs them. See the module docstring."""

    def __init__(self, **options: Any) -> None:
        executor_options, execute_options = split_options(options, "build_dag()")
        if execute_options:
            raise ConfigError(
                f"{', '.join(sorted(execute_options))} belongs to invoke(), not build_dag()"
            )
        self._options = executor_options
        self._parameter = ParameterNode(self)
        self._names: list[str] = []
        self._used_names: set[str] = set()
        self._suffixes: dict[str, int] = {}
        self._calls: list[
            tuple[Callable[..., Any], Task[..., Any] | None, tuple[Any, ...], dict[str, Any]]
        ] = []
        self._built: tuple[AsyncDAGExecutor, list[CallSpec], ExtraSlots] | None = None

    @property
    def parameter_node(self) -> ParameterNode:
        return self._parameter

    def add_node(
        self, fn: Callable[..., Any], *args: Any, name: str | None = None, **kwargs: Any
    ) -> NodeRef:
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
        # The same function may be added many times; later copies get a suffix. The
        # counter per base name keeps this O(1) (a probe from #2 each time was
        # quadratic: 12 s for 10,000 copies).
        n = self._suffixes.get(base, 1)
        candidate = base if n == 1 else f"{base}#{n}"
        while candidate in self._used_names:
            n += 1
            candidate = f"{base}#{n}"
        self._suffixes[base] = n + 1
        return candidate

    def build(self) -> DAG:
        """Freeze the graph and check every call against its function's signature."""
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

    def _source(self, value: Any, extras: ExtraSlots) -> Source:
        if isinstance(value, NodeRef):
            return value.index
        if isinstance(value, ParameterNode):
            return extras.parameter()
        return extras.constant(value)

    @property
    def dag(self) -> DAG:
        return self.build()

    async def invoke(self, argument: Any = None, **options: Any) -> ExecutionResult:
        """Run the graph; `argument` is what `parameter_node` stands for. Options:
        `timeout`, `cancel_event`."""
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
        return await executor.run_compiled(specs, extras, parameter=argument, **options)

    def invoke_sync(self, argument: Any = None, **options: Any) -> ExecutionResult:
        """`invoke` for code that is not async (runs a private event loop)."""
        result: ExecutionResult = run_sync(self.invoke(argument, **options))
        return result

    def __enter__(self) -> GraphBuilder:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.build()


def build_dag(**options: Any) -> GraphBuilder:
    """Start a builder-style graph; `options` are `AsyncDAGExecutor` options
    (`resources`, `max_concurrency`, `retries`, `fail_fast`, ...)."""
    return GraphBuilder(**options)
