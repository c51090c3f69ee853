"""docs/assets.md is true, and its example project runs.

Every ```python block of the guide is one of two kinds:

* a file of examples/asset_project, whose first line is its path
  (`# src/asset_project/defs/assets.py`): it must be that file, word for word, and the
  project is run below, in process and with `dg launch`;
* a snippet: run in order, in one namespace, with the project importable and `__file__`
  set to the project's definitions.py (a snippet may stand in for that file); the test
  functions a snippet defines are called.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dagloop.dagster import async_executor, execute_in_process
from tests.conftest import run_checked

ROOT = Path(__file__).resolve().parents[1]
DOC = ROOT / "docs" / "assets.md"
PROJECT = ROOT / "examples" / "asset_project"
SRC = PROJECT / "src"
BLOCKS = re.findall(r"```python\n(.*?)```", DOC.read_text(encoding="utf-8"), flags=re.DOTALL)
FILE_HEADER = re.compile(r"# (src/asset_project/[\w/]+\.py)\n")
BIN = Path(sys.executable).parent
ENGINE_MARK = "Executing steps on one asyncio event loop"


def _file_blocks() -> list[tuple[str, str]]:
    return [
        (match.group(1), block)
        for block in BLOCKS
        if (match := FILE_HEADER.fullmatch(block.split("\n", 1)[0] + "\n"))
    ]


def _snippets() -> list[str]:
    return [block for block in BLOCKS if not FILE_HEADER.fullmatch(block.split("\n", 1)[0] + "\n")]


@pytest.fixture
def project_importable() -> Iterator[None]:
    sys.path.insert(0, str(SRC))
    try:
        yield
    finally:
        sys.path.remove(str(SRC))
        for name in [n for n in sys.modules if n.split(".")[0] == "asset_project"]:
            del sys.modules[name]


def test_the_guide_shows_every_file_of_the_project_it_describes() -> None:
    shown = dict(_file_blocks())
    files = {
        str(path.relative_to(PROJECT))
        for path in (SRC / "asset_project" / "defs").glob("*.py")
        if path.name != "__init__.py"
    }
    assert set(shown) == files
    for relative, block in shown.items():
        assert block == (PROJECT / relative).read_text(encoding="utf-8"), relative


def test_every_snippet_runs_in_order(project_importable: None) -> None:
    snippets = _snippets()
    assert len(snippets) >= 5
    namespace: dict[str, object] = {
        "__name__": "docs_assets",
        "__file__": str(SRC / "asset_project" / "definitions.py"),
    }
    for index, source in enumerate(snippets):
        before = set(namespace)
        exec(compile(source, f"{DOC}:snippet{index}", "exec", dont_inherit=True), namespace)
        assert set(namespace) - before or "assert" in source, f"snippet {index} did nothing"
        for name in sorted(set(namespace) - before):
            value = namespace[name]
            if name.startswith("test_") and callable(value):
                value()


def test_the_definitions_py_variant_sets_the_executor(project_importable: None) -> None:
    (variant,) = [s for s in _snippets() if s.startswith("# src/asset_project/definitions.py")]
    namespace: dict[str, object] = {"__file__": str(SRC / "asset_project" / "definitions.py")}
    exec(compile(variant, str(DOC), "exec", dont_inherit=True), namespace)
    defs = namespace["defs"]()  # type: ignore[operator]
    assert defs.resolve_job_def("refresh_job").executor_def is async_executor


def test_the_project_runs_in_process(project_importable: None) -> None:
    from asset_project.definitions import defs  # type: ignore[import-not-found]

    definitions = defs()
    for name in ("refresh_job", "daily_events_job"):
        assert definitions.resolve_job_def(name).executor_def is async_executor
    result = execute_in_process(definitions.resolve_job_def("refresh_job"))
    assert result.success
    assert any(
        ENGINE_MARK in (event.message or "")
        for event in result.all_events
        if event.event_type == dg.DagsterEventType.ENGINE_EVENT
    )
    # users and orders overlapped on the loop: both started before either ended.
    kinds = [
        (event.step_key, event.event_type_value)
        for event in result.all_events
        if event.step_key in ("users", "orders")
    ]
    first_success = next(i for i, (_, kind) in enumerate(kinds) if kind == "STEP_SUCCESS")
    assert {key for key, kind in kinds[:first_success] if kind == "STEP_START"} == {
        "users",
        "orders",
    }


def test_dg_launch_runs_a_single_run_backfill_of_the_project(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        # What installing the project (`uv sync`, `pip install -e .`) would provide.
        "PYTHONPATH": os.pathsep.join([str(SRC), str(ROOT / "src")]),
    }
    command = [
        str(BIN / "dg"),
        "launch",
        "--assets",
        "daily_events",
        "--partition-range",
        "2026-01-01...2026-01-07",
    ]
    run_checked(command, PROJECT, env)

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.status == dg.DagsterRunStatus.SUCCESS
        records = list(instance.all_logs(run.run_id))
        assert any(
            ENGINE_MARK in record.user_message
            for record in records
            if record.dagster_event_type == dg.DagsterEventType.ENGINE_EVENT
        )
        partitions = sorted(
            record.dagster_event.partition
            for record in records
            if record.dagster_event_type == dg.DagsterEventType.ASSET_MATERIALIZATION
            and record.dagster_event is not None
        )
        assert partitions == [f"2026-01-0{day}" for day in range(1, 8)]
