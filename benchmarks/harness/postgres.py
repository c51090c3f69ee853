"""A throw-away PostgreSQL server for the benchmarks.

``initdb`` into a temporary directory, ``pg_ctl start`` on a free loopback port and
``pg_ctl stop`` + delete afterwards, even on error. PostgreSQL refuses to run as root,
so when we are root the server runs as the ``postgres`` system user created by Debian's
``postgresql`` package (via ``runuser``).
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass


def find_pg_bin() -> str | None:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    return os.path.dirname(candidates[0]) if candidates else None


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    port: int
    datadir: str
    user: str = "postgres"

    def url(self, db: str = "postgres") -> str:
        """libpq URL (psycopg2.connect)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def sqlalchemy_url(self, db: str) -> str:
        """URL for dagster-postgres' ``postgres_url``. The driver is named: SQLAlchemy 2.1
        maps a bare ``postgresql://`` to psycopg 3, while dagster-postgres installs
        psycopg2 (a bare URL, or ``postgres_db:`` settings, fail with "No module named
        'psycopg'")."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{db}"

    def create_database(self, name: str) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}"')
                cur.execute(f'CREATE DATABASE "{name}"')
        finally:
            conn.close()
        return self.sqlalchemy_url(name)

    def drop_database(self, name: str) -> None:
        import psycopg2

        conn = psycopg2.connect(self.url())
        conn.autocommit = True
        try:
            with conn.cursor() as cur:
                cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        finally:
            conn.close()

    def version(self) -> str:
        import psycopg2

        conn = psycopg2.connect(self.url())
        try:
            with conn.cursor() as cur:
                cur.execute("SHOW server_version")
                return str(cur.fetchone()[0])
        finally:
            conn.close()


def _as_user_cmd(cmd: list[str], user: str | None) -> list[str]:
    if user is None:
        return cmd
    return ["runuser", "-u", user, "--", *cmd]


@contextlib.contextmanager
def pg_server(max_connections: int = 300) -> Iterator[PgServer]:
    bindir = find_pg_bin()
    if bindir is None:
        raise RuntimeError(
            "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin/initdb); "
            "install Debian's 'postgresql' package (the benchmarks Makefile does)."
        )
    run_as: str | None = None
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError as e:
            raise RuntimeError("running as root and no 'postgres' user to run the server") from e
        run_as = "postgres"

    tmp = tempfile.mkdtemp(prefix="dagloop-bench-pg-")
    datadir = os.path.join(tmp, "data")
    os.mkdir(datadir, 0o700)
    if run_as:
        pw = pwd.getpwnam(run_as)
        os.chown(tmp, pw.pw_uid, pw.pw_gid)
        os.chown(datadir, pw.pw_uid, pw.pw_gid)
    port = free_port()
    logfile = os.path.join(tmp, "server.log")
    started = False
    try:
        subprocess.run(
            _as_user_cmd(
                [f"{bindir}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "-E", "UTF8"],
                run_as,
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        opts = (
            f"-p {port} -k {tmp} -c listen_addresses=127.0.0.1 "
            f"-c max_connections={max_connections} -c shared_buffers=128MB"
        )
        subprocess.run(
            _as_user_cmd(
                [f"{bindir}/pg_ctl", "-D", datadir, "-l", logfile, "-o", opts, "-w", "start"],
                run_as,
            ),
            check=True,
            capture_output=True,
            timeout=120,
        )
        started = True
        server = PgServer(port=port, datadir=datadir)
        deadline = time.monotonic() + 30
        while True:
            try:
                server.version()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield server
    finally:
        if started:
            subprocess.run(
                _as_user_cmd(
                    [f"{bindir}/pg_ctl", "-D", datadir, "-m", "immediate", "-w", "stop"], run_as
                ),
                capture_output=True,
                timeout=120,
                check=False,
            )
        shutil.rmtree(tmp, ignore_errors=True)
