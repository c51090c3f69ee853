"""Dagster's `dg` workflow, as a team adopting dagloop goes through it: scaffold a project
with `create-dagster project`, add a job and `Definitions(executor=async_executor)` under
its `defs/` folder, and run it with `dg launch --job`, all in subprocesses. The run's
event log (a temporary DAGSTER_HOME) must show dagloop's executor ran every step.

`create-dagster project --no-uv-sync` writes the project without creating a uv venv;
instead of installing the project into one, the subprocesses get its `src/` on
PYTHONPATH (what the editable install `uv sync` makes does), and use the `dg` of the
environment running the tests.
"""

from __future__ import annotations

import os
import sys
import textwrap
import tomllib
from pathlib import Path

import dagster as dg

from tests.conftest import run_checked
from tests.dagster.conftest import ENGINE_MARK

BIN = Path(sys.executable).parent
WIDTH = 6

JOB_MODULE = f"""
import asyncio

import dagster as dg


@dg.op(out=dg.DynamicOut())
def items():
    for i in range({WIDTH}):
        yield dg.DynamicOutput(i, mapping_key=f"item_{{i}}")


@dg.op
async def fetch(item: int) -> int:
    await asyncio.sleep(1)
    return item * 10


@dg.op
def total(values: list) -> int:
    return sum(values)


@dg.job
def fanout_job():
    total(items().map(fetch).collect())
"""

# The one change a dg project needs: every job of the code location that does not name
# an executor of its own runs on dagloop's.
EXECUTOR_MODULE = """
import dagster as dg
from dagloop.dagster import async_executor

defs = dg.Definitions(executor=async_executor)
"""


def _env(home: Path, project: Path | None = None) -> dict[str, str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        # No look-up of create-dagster's newest release on the package index.
        "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0",
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
    }
    if project is not None:
        env["PYTHONPATH"] = str(project / "src")
    return env


def test_a_create_dagster_project_runs_on_dagloop_with_dg_launch(tmp_path: Path) -> None:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")

    run_checked(
        [str(BIN / "create-dagster"), "project", "--no-uv-sync", "adopter"],
        cwd=tmp_path,
        env=_env(home),
    )
    project = tmp_path / "adopter"
    settings = tomllib.loads((project / "pyproject.toml").read_text())
    assert settings["tool"]["dg"]["directory_type"] == "project"
    defs_folder = project / "src" / "adopter" / "defs"
    assert (project / "src" / "adopter" / "definitions.py").is_file() and defs_folder.is_dir()

    (defs_folder / "fanout.py").write_text(textwrap.dedent(JOB_MODULE))
    (defs_folder / "executor.py").write_text(textwrap.dedent(EXECUTOR_MODULE))

    launched = run_checked(
        [str(BIN / "dg"), "launch", "--job", "fanout_job"], cwd=project, env=_env(home, project)
    )
    assert ENGINE_MARK in launched.stdout + launched.stderr

    with dg.DagsterInstance.from_config(str(home)) as instance:
        (run,) = instance.get_runs()
        assert run.job_name == "fanout_job"
        assert run.status == dg.DagsterRunStatus.SUCCESS
        records = list(instance.all_logs(run.run_id))
        engine = [
            r.user_message
            for r in records
            if r.dagster_event_type == dg.DagsterEventType.ENGINE_EVENT
        ]
        assert any(ENGINE_MARK in m for m in engine), engine
        starts = {
            r.step_key: r.timestamp
            for r in records
            if r.dagster_event_type == dg.DagsterEventType.STEP_START
        }
        ends = {
            r.step_key: r.timestamp
            for r in records
            if r.dagster_event_type == dg.DagsterEventType.STEP_SUCCESS
        }
        mapped = {f"fetch[item_{i}]" for i in range(WIDTH)}
        assert set(ends) == mapped | {"items", "total"}
        # The 1 s fetches overlapped: each started before the first of them ended.
        first_end = min(ends[key] for key in mapped)
        assert all(starts[key] < first_end for key in mapped)
