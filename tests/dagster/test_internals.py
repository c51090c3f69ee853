"""What dagloop relies on in Dagster's private API is there in the installed Dagster, and
the installed Dagster is inside the range pyproject.toml declares.

* Every name `dagloop.dagster._internals` exports resolves, and every name dagloop
  imports from it is exported.
* Every attribute `_internals.relied_on.PRIVATE_ATTRIBUTES` lists exists on the real
  object it is read on (instances, storages, a run's execution context, its log manager
  and resources, a plan and its `ActiveExecution`), built here on the installed
  Dagster. A failure names the attribute and the dagloop code that reads it.
* The list and the code agree: every private attribute the readers use is listed, every
  listed one is used by its reader, and no other module of `dagloop.dagster` reads a
  private attribute of an object it does not define.
* The accessors do on the real objects what their callers expect.
"""

import ast
import importlib
import importlib.metadata
import inspect
import logging
import re
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, get_args

import dagster as dg
import pytest
from dagster_postgres.event_log import event_log as postgres_event_log

from dagloop.dagster import _internals
from dagloop.dagster._internals import (
    PRIVATE_ATTRIBUTES,
    DagsterLogManager,
    ExecuteRunWithPlanIterable,
    ExecutionPlan,
    Executor,
    InMemoryJob,
    PlanExecutionContext,
    PlanExecutionContextManager,
    ReliedOn,
    RetryMode,
    StepHandle,
    create_execution_plan,
    execute_run_iterator,
)
from dagloop.dagster._internals.relied_on import Owner
from tests.dagster.conftest import persistent_sqlite_instance

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = ROOT / "pyproject.toml"
DAGSTER_SOURCES = ROOT / "src" / "dagloop" / "dagster"
INTERNALS = DAGSTER_SOURCES / "_internals"


def test_every_private_name_resolves() -> None:
    from dagloop.dagster._internals import names

    missing = [
        name
        for module in (_internals, names)
        for name in module.__all__
        if getattr(module, name, None) is None
    ]
    assert missing == []


def _names_imported_from_internals() -> dict[str, set[str]]:
    """Each name imported `from dagloop.dagster._internals`, with the files importing it."""
    importers: dict[str, set[str]] = {}
    for folder in ("src", "tests", "benchmarks", "examples"):
        for path in (ROOT / folder).rglob("*.py"):
            if any(part.startswith(".") for part in path.relative_to(ROOT).parts):
                continue  # a virtual environment (benchmarks/.venv), not dagloop's code
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.ImportFrom) and node.module == "dagloop.dagster._internals":
                    for alias in node.names:
                        importers.setdefault(alias.name, set()).add(str(path.relative_to(ROOT)))
    return importers


def test_every_name_dagloop_imports_from_internals_is_exported() -> None:
    importers = _names_imported_from_internals()
    assert "run_shard_batch_writer" in importers  # the scan sees the imports
    not_exported = {
        name: files
        for name, files in importers.items()
        if name not in _internals.__all__ and not inspect.ismodule(getattr(_internals, name, None))
    }
    assert not_exported == {}


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


# -- The real objects the attributes are read on ------------------------------------------


@dg.op(out=dg.DynamicOut(int))
def produce():
    yield dg.DynamicOutput(1, mapping_key="one")


@dg.op
def work(item: int) -> int:
    return item


@dg.op
def total(values: list[int]) -> int:
    return len(values)


@dg.job
def shape_job():
    total(produce().map(work).collect())


#: The run contexts `_KeepRunContext` built.
_KEPT: list[PlanExecutionContext] = []


class _KeepRunContext(Executor):
    """Builds the run's execution context the way dagloop's executor does
    (`ExecuteRunWithPlanIterable` over a `PlanExecutionContextManager`), keeps it, and
    runs no step."""

    @property
    def retries(self) -> RetryMode:
        return RetryMode.DISABLED

    def execute(self, plan_context: Any, execution_plan: ExecutionPlan) -> Iterator[Any]:
        def keep(job_context: PlanExecutionContext, execution_plan: ExecutionPlan) -> Iterator[Any]:
            _KEPT.append(job_context)
            yield from ()

        yield from ExecuteRunWithPlanIterable(
            execution_plan=execution_plan,
            iterator=keep,
            execution_context_manager=PlanExecutionContextManager(
                job=plan_context.job,
                retry_mode=plan_context.retry_mode,
                execution_plan=execution_plan,
                run_config=plan_context.run_config,
                dagster_run=plan_context.dagster_run,
                instance=plan_context.instance,
                raise_on_error=plan_context.raise_on_error,
                output_capture=plan_context.output_capture,
            ),
        )


@dg.executor(name="keep_run_context")
def keep_run_context(init_context: dg.InitExecutorContext) -> _KeepRunContext:
    return _KeepRunContext()


@dg.op(required_resource_keys={"greeting"})
def greet(context: dg.OpExecutionContext) -> str:
    return str(context.resources.greeting)


@dg.job(
    executor_def=keep_run_context,
    resource_defs={"greeting": dg.ResourceDefinition.hardcoded_resource("hello")},
)
def context_job():
    greet()


def _run_context(instance: dg.DagsterInstance) -> PlanExecutionContext:
    run = instance.create_run_for_job(job_def=context_job)
    _KEPT.clear()
    events = list(execute_run_iterator(InMemoryJob(context_job), run, instance))
    assert any(event.event_type == dg.DagsterEventType.RUN_SUCCESS for event in events)
    (job_context,) = _KEPT
    return job_context


@pytest.fixture(scope="module")
def ephemeral() -> Iterator[dg.DagsterInstance]:
    with dg.DagsterInstance.ephemeral() as instance:
        yield instance


@pytest.fixture(scope="module")
def sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dg.DagsterInstance]:
    yield from persistent_sqlite_instance(tmp_path_factory.mktemp("internals"))


@pytest.fixture(scope="module")
def run_context(ephemeral: dg.DagsterInstance) -> PlanExecutionContext:
    return _run_context(ephemeral)


def _attribute(owner: object, name: str) -> Any:
    """The owner's attribute `name`, read by name (what the registry lists)."""
    return getattr(owner, name)


@pytest.fixture(scope="module")
def owners(
    ephemeral: dg.DagsterInstance, sqlite: dg.DagsterInstance, run_context: PlanExecutionContext
) -> dict[str, list[object]]:
    """Real objects of each `Owner` kind, built on the installed Dagster."""
    plan = create_execution_plan(shape_job)
    # Not entered: exiting would raise for the steps left pending.
    active = plan.start(retry_mode=RetryMode.DISABLED)
    run_log = run_context.log
    return {
        "DagsterInstance": [ephemeral, sqlite],
        "InMemoryEventLogStorage": [ephemeral.event_log_storage],
        "SqliteEventLogStorage": [sqlite.event_log_storage],
        # Its listed attributes are methods, which the class has; a real one needs a
        # server (tests/dagster/test_postgres_storage.py writes through it).
        "PostgresEventLogStorage": [postgres_event_log.PostgresEventLogStorage],
        "dagster_postgres.event_log.event_log": [postgres_event_log],
        "PlanExecutionContext": [run_context],
        "ExecutionData": [_attribute(run_context, "_execution_data")],
        "ScopedResourcesBuilder": [run_context.scoped_resources_builder],
        # The run's manager and a step's, derived from it by `for_step`.
        "DagsterLogManager": [run_log, run_context.for_step(context_job_step(run_context)).log],
        "DagsterRun": [run_context.dagster_run, ephemeral.get_run_by_id(run_context.run_id)],
        "ExecutionPlan": [plan],
        "ActiveExecution": [active],
        "UnresolvedMappedExecutionStep": [plan.get_step_by_key("work[?]")],
        # A step of the plan and one resolved from a mapped step, as streaming adds them.
        "ExecutionStep": [
            plan.get_step_by_key("produce"),
            *plan.get_step_by_key("work[?]").resolve({"produce": {"result": ["two"]}}),
        ],
        "StepHandle": [StepHandle],
        "ResolvedFromDynamicStepHandle": [StepHandle.parse_from_key("work[two]")],
    }


def context_job_step(job_context: PlanExecutionContext) -> Any:
    return job_context.execution_plan.get_step_by_key("greet")


def test_the_owners_are_the_types_dagloop_expects(
    owners: dict[str, list[object]], ephemeral: dg.DagsterInstance, sqlite: dg.DagsterInstance
) -> None:
    """The batch writers apply only to these exact storage types, so their attributes
    are checked on exactly these."""
    assert set(owners) == set(get_args(Owner))
    assert type(ephemeral.event_log_storage).__name__ == "InMemoryEventLogStorage"
    assert type(sqlite.event_log_storage).__name__ == "SqliteEventLogStorage"
    assert all(type(o).__name__ == "DagsterLogManager" for o in owners["DagsterLogManager"])
    assert type(owners["UnresolvedMappedExecutionStep"][0]).__name__ == (
        "UnresolvedMappedExecutionStep"
    )


@pytest.mark.parametrize(
    "relied_on", PRIVATE_ATTRIBUTES, ids=[f"{r.owner}.{r.attribute}" for r in PRIVATE_ATTRIBUTES]
)
def test_every_relied_on_attribute_exists(
    relied_on: ReliedOn, owners: dict[str, list[object]]
) -> None:
    for owner in owners[relied_on.owner]:
        assert hasattr(owner, relied_on.attribute), (
            f"Dagster {importlib.metadata.version('dagster')}: {relied_on.owner} "
            f"({type(owner).__name__}) has no attribute {relied_on.attribute!r}, which "
            f"dagloop.dagster.{relied_on.reader} relies on"
        )


# -- The registry and the code agree --------------------------------------------------------


def _defined_here(tree: ast.Module) -> set[str]:
    """Names a module defines itself: functions, classes, and attributes it sets on self."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif (
            isinstance(node, ast.Attribute)
            and isinstance(node.ctx, ast.Store)
            and isinstance(node.value, ast.Name)
            and node.value.id in ("self", "cls")
        ):
            names.add(node.attr)
    return names


def _private_attributes_read(path: Path, defined: set[str]) -> set[str]:
    """`obj._x` in the module's code, on objects other than self, for `_x` not in
    `defined`."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if not isinstance(node, ast.Attribute) or not node.attr.startswith("_"):
            continue
        if node.attr.startswith("__") or node.attr in defined:
            continue
        value = node.value
        if isinstance(value, ast.Name) and value.id in ("self", "cls"):
            continue
        if isinstance(value, ast.Call) and ast.unparse(value.func) == "super":
            continue
        found.add(node.attr)
    return found


def _source_of(reader: str) -> Path:
    module = reader.rsplit(".", 1)[0]
    return DAGSTER_SOURCES.joinpath(*module.split(".")).with_suffix(".py")


def test_every_reader_exists_and_uses_what_it_lists() -> None:
    for relied_on in PRIVATE_ATTRIBUTES:
        module_name, name = relied_on.reader.rsplit(".", 1)
        module = importlib.import_module(f"dagloop.dagster.{module_name}")
        assert callable(getattr(module, name, None)), relied_on.reader
        tree = ast.parse(_source_of(relied_on.reader).read_text())
        used = {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute)}
        used |= {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert relied_on.attribute in used, (
            f"{relied_on.reader} is listed as using {relied_on.owner}.{relied_on.attribute}, "
            "which its module never names"
        )


def test_every_private_attribute_read_is_listed() -> None:
    """The `_internals` modules read private attributes only where the registry says; no
    other module of dagloop.dagster reads one of an object it does not define."""
    listed: dict[Path, set[str]] = {}
    for relied_on in PRIVATE_ATTRIBUTES:
        listed.setdefault(_source_of(relied_on.reader), set()).add(relied_on.attribute)
    sources = sorted(DAGSTER_SOURCES.rglob("*.py"))
    assert INTERNALS / "storage.py" in sources
    outside = [path for path in sources if INTERNALS not in path.parents]
    defined_outside = set().union(*(_defined_here(ast.parse(p.read_text())) for p in outside))
    unlisted: dict[str, set[str]] = {}
    for path in sources:
        if INTERNALS in path.parents:
            read = _private_attributes_read(path, _defined_here(ast.parse(path.read_text())))
        else:
            read = _private_attributes_read(path, defined_outside)
        extra = read - listed.get(path, set())
        if extra:
            unlisted[str(path.relative_to(ROOT))] = extra
    assert unlisted == {}, (
        "private Dagster attributes read outside the registry (list them in "
        f"_internals/relied_on.py and read them only in _internals): {unlisted}"
    )


# -- The accessors on real objects ---------------------------------------------------------


def test_event_listeners_are_the_instance_subscribers(ephemeral: dg.DagsterInstance) -> None:
    seen: list[Any] = []
    ephemeral.add_event_listener("a-run", seen.append)
    assert _internals.event_listeners(ephemeral, "a-run") == [seen.append]
    assert _internals.event_listeners(ephemeral, "another-run") == []


def test_batch_writers_exist_for_the_in_memory_and_sqlite_storages(
    ephemeral: dg.DagsterInstance, sqlite: dg.DagsterInstance
) -> None:
    assert _internals.run_shard_batch_writer(ephemeral) is not None
    assert _internals.run_shard_batch_writer(sqlite) is not None
    assert _internals.event_log_in_memory(ephemeral)
    assert not _internals.event_log_in_memory(sqlite)


def test_the_log_manager_parts_and_its_replacement(run_context: PlanExecutionContext) -> None:
    run_log = run_context.log
    handler = _internals.dagster_handler(run_log)
    assert isinstance(handler, logging.Handler)
    loggers = _internals.managed_loggers(run_log)
    assert all(isinstance(logger, logging.Logger) for logger in loggers)
    # python_logs.RoutedLogManager builds a manager from these parts by keyword.
    parameters = inspect.signature(DagsterLogManager.__init__).parameters
    assert {"dagster_handler", "level", "managed_loggers"} <= set(parameters), (
        "DagsterLogManager's constructor changed; python_logs.RoutedLogManager passes "
        f"dagster_handler, level and managed_loggers: {list(parameters)}"
    )
    rebuilt = DagsterLogManager(
        dagster_handler=handler, level=run_log.level, managed_loggers=loggers
    )
    restore = _internals.replace_run_log_manager(run_context, rebuilt)
    try:
        assert run_context.log is rebuilt
        step_log = run_context.for_step(context_job_step(run_context)).log
        assert _internals.dagster_handler(step_log) is not handler  # with_tags made its own
        assert list(_internals.managed_loggers(step_log)) == list(loggers)
    finally:
        restore()
    assert run_context.log is run_log


def test_shared_scoped_resources_are_built_once_per_key_set(ephemeral: dg.DagsterInstance) -> None:
    job_context = _run_context(ephemeral)
    assert _internals.share_scoped_resources(job_context)
    builder = job_context.scoped_resources_builder
    assert type(builder).__name__ == "_SharedScopedResources"
    first = builder.build({"greeting"})
    assert first.greeting == "hello"
    assert builder.build({"greeting"}) is first
    assert builder.build(set()) is not first


def test_a_run_with_other_steps_to_execute(run_context: PlanExecutionContext) -> None:
    run = run_context.dagster_run
    before = run.step_keys_to_execute
    changed = _internals.run_with_steps_to_execute(run, ("greet", "another"))
    assert isinstance(changed, dg.DagsterRun)
    assert changed.step_keys_to_execute == ["greet", "another"]
    assert changed.run_id == run.run_id
    assert run.step_keys_to_execute == before


def test_the_shapes_streaming_resolution_writes_into() -> None:
    """`resolve_mapping_key_ahead` adds steps the way Dagster's own resolution does: to
    the plan's step maps and to ActiveExecution's pending steps."""
    from dagloop.dagster._internals import mapped_steps_by_dynamic_output, resolve_mapping_key_ahead

    plan = create_execution_plan(shape_job)
    mapped = mapped_steps_by_dynamic_output(plan)
    assert list(mapped) == [("produce", "result")]
    (unresolved,) = mapped[("produce", "result")]
    assert unresolved.key == "work[?]"
    # Not entered: exiting would raise for the steps left pending.
    active = plan.start(retry_mode=RetryMode.DISABLED)
    pending = _attribute(active, "_pending")
    assert isinstance(pending, dict)
    added = resolve_mapping_key_ahead(plan, active, [unresolved], "produce", "result", "one")
    assert added == ["work[one]"]
    assert plan.get_step_by_key("work[one]").key == "work[one]"
    assert plan.executable_map["work[one]"] == plan.step_dict_by_key["work[one]"].handle
    assert pending["work[one]"] == set()  # the producer is left out
    # A key seen before (a retried producer yielding it again) is left alone.
    assert resolve_mapping_key_ahead(plan, active, [unresolved], "produce", "result", "one") == []
    # Dagster's own resolution at the producer's success skips what is in place.
    assert set(plan.resolve({"produce": {"result": ["one"]}})) == {"total"}


def test_a_worker_plan_resolves_one_mapped_step_ahead() -> None:
    """`resolve_step_ahead` adds exactly the asked step of a mapping whose producer has
    not completed, as `resolve_mapping_key_ahead` would; other keys refuse."""
    from dagloop.dagster._internals import resolve_step_ahead

    plan = create_execution_plan(shape_job)
    assert "work[two]" not in plan.step_dict_by_key
    assert resolve_step_ahead(plan, "work[two]")
    step = plan.get_executable_step_by_key("work[two]")
    assert step.get_mapping_key() == "two"
    assert plan.executable_map["work[two]"] == step.handle
    assert "work[one]" not in plan.step_dict_by_key  # no other key of the mapping
    assert resolve_step_ahead(plan, "work[two]")  # present already: left alone
    assert plan.get_executable_step_by_key("work[two]") is step
    assert not resolve_step_ahead(plan, "produce")  # not a mapped step
    assert not resolve_step_ahead(plan, "total")  # the collect waits for every key
    assert not resolve_step_ahead(plan, "nope[two]")  # no such op
    # Dagster's own resolution at the producer's success keeps it and adds the rest.
    assert set(plan.resolve({"produce": {"result": ["one", "two"]}})) >= {"work[one]", "total"}
