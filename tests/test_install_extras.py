"""Without an extra's packages, importing what needs them says which extra to install.

Each case runs in a fresh interpreter whose import system cannot find the package (a
finder in front of `sys.meta_path` refuses it, as a missing install does), so dagloop's
own import code runs unchanged.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

BLOCKER = """
import sys

class NotInstalled:
    def __init__(self, *names):
        self.names = names

    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in self.names:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None

sys.meta_path.insert(0, NotInstalled(*sys.argv[1:]))
"""


def _run(code: str, *blocked: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", BLOCKER + textwrap.dedent(code), *blocked],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_dagloop_dagster_without_dagster_names_the_extra() -> None:
    result = _run(
        """
        try:
            import dagloop.dagster
        except ImportError as error:
            print(type(error).__name__, "|", error, "|", error.name)
        """,
        "dagster",
    )
    assert result.returncode == 0, result.stderr
    kind, message, name = (part.strip() for part in result.stdout.split("|"))
    assert kind == "MissingExtraError"
    assert 'pip install "dagloop[dagster]"' in message
    assert name == "dagster"


def test_from_dagloop_dagster_import_fails_the_same_way() -> None:
    result = _run("from dagloop.dagster import async_executor\n", "dagster")
    assert result.returncode == 1
    assert 'pip install "dagloop[dagster]"' in result.stderr
    assert "ModuleNotFoundError: No module named 'dagster'" in result.stderr  # the cause


def test_the_engine_needs_no_extra() -> None:
    result = _run(
        """
        import dagloop
        dag = dagloop.DAG.builder().add_edge("a", "b").build()
        result = dagloop.DAGExecutor(dag).execute({"a": lambda: 1, "b": lambda a: a + 1})
        print(result.value("b"))
        """,
        "dagster",
        "distributed",
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "2"


def test_a_broken_dagster_install_is_not_reported_as_a_missing_extra() -> None:
    # Dagster is there, but one of its own dependencies is not: that error, unchanged.
    result = _run("import dagloop.dagster\n", "dagster_shared")
    assert result.returncode == 1
    assert "No module named 'dagster_shared'" in result.stderr
    assert "dagloop[dagster]" not in result.stderr


def test_steps_on_dask_without_distributed_name_the_dask_extra() -> None:
    result = _run(
        """
        import asyncio
        from dagloop.runtime.dask_client import dask_client

        async def main():
            async with dask_client(address=None, processes=1, threads_per_worker=1):
                pass

        try:
            asyncio.run(main())
        except ImportError as error:
            print(error)
        """,
        "distributed",
    )
    assert result.returncode == 0, result.stderr
    assert 'pip install "dagloop[dask]"' in result.stdout
