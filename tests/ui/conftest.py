"""What the browser tests share: Debian's chromium driven by Playwright, and a
dagster-webserver on a fresh DAGSTER_HOME loading the test module's `CODE_LOCATION`.

They need Debian's chromium (/usr/bin/chromium, or $DAGLOOP_CHROMIUM) and the `playwright`
Python package (extra `ui`). `make test-ui` runs them (it installs chromium when missing,
and `.ci/run` calls it); `make test` leaves them out. Without what they need they fail,
naming what is missing: they never skip themselves.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

CHROMIUM = os.environ.get("DAGLOOP_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def _requirements() -> str | None:
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "the playwright package is not installed (extra 'ui')"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no chromium at {CHROMIUM}"
    if shutil.which("dagster-webserver", path=str(Path(sys.executable).parent)) is None:
        return "dagster-webserver is not installed"
    return None


@pytest.fixture(scope="module", autouse=True)
def _ui_available() -> None:
    missing = _requirements()
    if missing is not None:
        pytest.fail(f"{missing}: run it with `make test-ui`, which installs chromium")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def dagster_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


@pytest.fixture
def webserver(request: pytest.FixtureRequest, dagster_home: Path, tmp_path: Path) -> Iterator[str]:
    port = _free_port()
    log = (tmp_path / "webserver.log").open("w")
    env = dict(os.environ, DAGSTER_HOME=str(dagster_home))
    server = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "dagster-webserver"),
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-f",
            request.module.CODE_LOCATION,
        ],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if server.poll() is not None:
                raise RuntimeError(f"dagster-webserver exited: {(tmp_path / 'webserver.log')}")
            try:
                with urllib.request.urlopen(f"{url}/server_info", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("dagster-webserver did not start within 120 s")
            time.sleep(0.5)
        yield url
    finally:
        server.terminate()
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()


def dismiss_dialogs(page: Any) -> None:
    """Close what the UI pops up on a first visit ("Join the Dagster community")."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5000)
    except Exception:
        return
    skip.click()
    page.locator(".bp5-overlay-backdrop").wait_for(state="detached", timeout=10_000)
