"""Streaming fan-out in a real browser: while the dynamic op still runs, the run page's
Gantt status panel lists its mapped steps as executing beside it. The screenshot is saved
as `streaming_gantt.png` in the test's temp dir (its path is printed)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import dagster as dg
import pytest

from tests.dagster.jobs import streaming
from tests.ui.conftest import CHROMIUM, CHROMIUM_ARGS, dismiss_dialogs

#: The code location the webserver loads (the `webserver` fixture reads it).
CODE_LOCATION = streaming.__file__

pytestmark = pytest.mark.timeout(240)

#: The step labels of the Gantt status panel's "Executing (N)" section.
EXECUTING = """() => {
  const header = [...document.querySelectorAll('div')].find(
    (d) => d.children.length === 0 && /^Executing \\(\\d+\\)$/.test(d.textContent.trim()));
  if (!header) return [];
  const section = header.parentElement.parentElement;
  return [...section.querySelectorAll('[class*="GanttStatusPanel_stepLabel"]')]
    .map((e) => e.textContent.trim());
}"""


def test_mapped_steps_show_as_executing_while_their_producer_runs(
    dagster_home: Path, webserver: str, tmp_path: Path
) -> None:
    from playwright.sync_api import sync_playwright

    results: list[dg.JobExecutionResult] = []

    def execute() -> None:
        with dg.DagsterInstance.get() as instance:
            job = dg.reconstructable(streaming.ui_streaming_job)
            results.append(dg.execute_job(job, instance))

    runner = threading.Thread(target=execute)
    runner.start()
    with dg.DagsterInstance.get() as instance:
        deadline = time.monotonic() + 60
        while not instance.get_runs(limit=1) and time.monotonic() < deadline:
            time.sleep(0.2)
        run_id = instance.get_runs(limit=1)[0].run_id

    screenshot = tmp_path / "streaming_gantt.png"
    seen: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1600, "height": 1000})
            page.goto(f"{webserver}/runs/{run_id}", wait_until="networkidle")
            dismiss_dialogs(page)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                seen = page.evaluate(EXECUTING)
                if "watched_producer" in seen and any(s.startswith("watched_work[") for s in seen):
                    break
                time.sleep(0.5)
            page.screenshot(path=str(screenshot))
            print(f"screenshot: {screenshot}")
        finally:
            browser.close()
    runner.join(timeout=120)

    assert "watched_producer" in seen, seen
    assert any(s.startswith("watched_work[") for s in seen), seen
    (result,) = results
    assert result.success
