"""Issue 12 in a real browser: dagster-webserver shows one step's stdout tab holding only
that step's lines.

Needs Debian's chromium (/usr/bin/chromium, or $DAGLOOP_CHROMIUM) and the `playwright`
Python package (extra `ui`). Run by `make test-ui` (which installs chromium when missing,
and which `.ci/run` calls); `make test` leaves it out. Without them it fails, naming what
is missing: it never skips itself. The screenshot is saved as
`step_stdout.png` in the test's temp dir (its path is printed).
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pytest

from tests.dagster.jobs import printing
from tests.dagster.jobs.printing import marker, printing_job

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
STEP = "print_async[a07]"
NAME = "a07"

pytestmark = pytest.mark.timeout(240)


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
def dagster_home(tmp_path: Path) -> Iterator[Path]:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    previous = os.environ.get("DAGSTER_HOME")
    os.environ["DAGSTER_HOME"] = str(home)
    try:
        yield home
    finally:
        if previous is None:
            os.environ.pop("DAGSTER_HOME", None)
        else:
            os.environ["DAGSTER_HOME"] = previous


@pytest.fixture
def webserver(dagster_home: Path, tmp_path: Path) -> Iterator[str]:
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
            printing.__file__,
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


def _dismiss_dialogs(page: Any) -> None:
    """Close what the UI pops up on a first visit ("Join the Dagster community")."""
    skip = page.get_by_role("button", name="Skip")
    try:
        skip.wait_for(state="visible", timeout=5000)
    except Exception:
        return
    skip.click()
    page.locator(".bp5-overlay-backdrop").wait_for(state="detached", timeout=10_000)


def test_step_stdout_tab_shows_only_that_step(
    dagster_home: Path, webserver: str, tmp_path: Path
) -> None:
    from playwright.sync_api import expect, sync_playwright

    with dg.DagsterInstance.get() as instance:
        result = dg.execute_job(dg.reconstructable(printing_job), instance)
        assert result.success
        run_id = result.run_id
        (file_key,) = [
            r.dagster_event.logs_captured_data.file_key
            for r in instance.all_logs(run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
            if r.dagster_event is not None
            and r.dagster_event.logs_captured_data.step_keys == [STEP]
        ]

    own = [marker(NAME, line) for line in range(printing.LINES) if line != 4]
    screenshot = tmp_path / "step_stdout.png"
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 1000})
            # The run page with the step selected, as a click on it in the Gantt chart
            # does; then the stdout tab of the logs.
            page.goto(f"{webserver}/runs/{run_id}", wait_until="networkidle")
            try:
                _dismiss_dialogs(page)
                # The stdout tab, then the step in its picker (which lists each capture:
                # one per step, named by the step key, plus the run's).
                stdout_tab = page.get_by_role("button", name="stdout")
                expect(stdout_tab).to_be_enabled(timeout=30_000)
                stdout_tab.click()
                picker = page.get_by_placeholder("Select a step…")
                picker.click()
                picker.fill(STEP)
                page.get_by_role("menuitem", name=STEP, exact=True).click()
                expect(page.get_by_text(own[-1])).to_be_visible(timeout=60_000)
                # The picker names the step (its own capture, not "pid: N (63 steps)"),
                # and the file shown is the one its LOGS_CAPTURED event named.
                expect(picker).to_have_value(STEP)
                expect(page.get_by_text(f"compute_logs/{file_key}.out")).to_be_visible()
            finally:
                page.screenshot(path=str(screenshot))
            print(f"screenshot: {screenshot}")
            text = page.locator("body").inner_text()
        finally:
            browser.close()

    shown = re.findall(r"marker \S+ line \d+", text)
    assert shown == own, shown
