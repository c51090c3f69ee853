"""What every suite gets: the quick flag, a logger, the PostgreSQL server if one is
needed, command-line overrides; the instances a Dagster suite can run on."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from harness.postgres import PgServer, pg_server

INSTANCES = ["ephemeral", "sqlite", "postgres"]


@dataclass
class Ctx:
    quick: bool
    log: Callable[[str], None]
    pg: PgServer | None = None
    pg_error: str | None = None
    c0: dict[str, dict[str, Any]] = field(default_factory=dict)  # instance -> fit
    instances: list[str] | None = None  # --instances: restrict the Dagster suites
    profile_dir: str | None = None
    n: int | None = None  # --n, --sleep, --repeats: override the dask suite's defaults
    sleep: float | None = None
    repeats: int | None = None
    headline: bool = False  # --headline: the fanout suite's target cases only


@contextlib.contextmanager
def context(quick: bool, need_pg: bool, log: Callable[[str], None]) -> Iterator[Ctx]:
    ctx = Ctx(quick=quick, log=log)
    if not need_pg:
        yield ctx
        return
    try:
        cm = pg_server()
        ctx.pg = cm.__enter__()
    except Exception as e:  # recorded per case, never fatal
        ctx.pg_error = f"PostgreSQL server could not start: {type(e).__name__}: {e}"[:300]
        log(ctx.pg_error)
        yield ctx
        return
    try:
        log(f"PostgreSQL {ctx.pg.version()} on 127.0.0.1:{ctx.pg.port}")
        yield ctx
    finally:
        cm.__exit__(None, None, None)


def now() -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S %Z")
