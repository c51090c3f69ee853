"""Per-step stdout/stderr in a real browser: dagster-webserver shows one step's stdout
tab holding only that step's lines. The screenshot is saved as `step_stdout.png` in the
test's temp dir (its path is printed). See conftest.py for what the browser tests need.
"""

from __future__ import annotations

import re
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster.jobs import printing
from tests.dagster.jobs.printing import marker, printing_job
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, dismiss_dialogs

#: The code location the webserver loads (the `webserver` fixture reads it).
CODE_LOCATION = printing.__file__
STEP = "print_async[a07]"
NAME = "a07"

pytestmark = pytest.mark.timeout(240)


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
                dismiss_dialogs(page)
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
