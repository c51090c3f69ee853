"""The Makefile picks the newest python3.1x that runs and refuses one older than 3.11."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _fake_python(folder: Path, name: str, *, works: bool, version: str = "") -> None:
    """A `name` on PATH: a stand-in that fails (as a pyenv shim of an inactive version
    does), or the real interpreter, optionally pretending to be `version`."""
    script = folder / name
    if not works:
        script.write_text("#!/bin/sh\necho 'pyenv: command not found' >&2\nexit 127\n")
    elif version:
        major, minor = version.split(".")
        script.write_text(
            "#!/bin/sh\n"
            f'if [ "$1" = "--version" ]; then echo "Python {version}.0"; exit 0; fi\n'
            f"exec {sys.executable} -c 'import sys; sys.exit(({major}, {minor}) < (3, 11))'\n"
        )
    else:
        script.write_text(f'#!/bin/sh\nexec {sys.executable} "$@"\n')
    script.chmod(0o755)


def _make(folder: Path, *args: str) -> subprocess.CompletedProcess[str]:
    make = shutil.which("make")
    assert make is not None
    env = {**os.environ, "PATH": f"{folder}:/usr/bin:/bin"}
    return subprocess.run(
        [make, "--no-print-directory", "-C", str(REPO), *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_newest_python_that_runs_is_chosen(tmp_path: Path) -> None:
    _fake_python(tmp_path, "python3.14", works=False)
    _fake_python(tmp_path, "python3.13", works=True)
    _fake_python(tmp_path, "python3.11", works=True)
    shown = _make(tmp_path, "--eval", "show-python: ; @echo $(PYTHON)", "show-python")
    assert shown.stdout.strip() == "python3.13", shown.stderr


def test_a_python_older_than_3_11_is_refused_with_a_clear_message(tmp_path: Path) -> None:
    _fake_python(tmp_path, "python3", works=True, version="3.10")
    venv = tmp_path / "venv"
    result = _make(tmp_path, "PYTHON=python3", f"VENV={venv}", "setup")
    assert result.returncode != 0
    assert "dagloop needs Python 3.11 or newer" in result.stderr
    assert "Python 3.10" in result.stderr
    assert not venv.exists()  # refused before anything was created
