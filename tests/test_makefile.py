"""The Makefile picks the newest python3.1x that runs and refuses one older than 3.11;
`make demo` installs only what the demo needs; the floor run pins the declared lower
bounds."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
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


def test_make_demo_installs_only_the_dagster_extra(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    planned = _make(tmp_path, "--dry-run", f"VENV={venv}", "PYTHON=" + sys.executable, "demo")
    assert planned.returncode == 0, planned.stderr
    assert "pip install --quiet -e '.[dagster]'" in planned.stdout
    assert ".[dev]" not in planned.stdout
    assert "examples/demo.py" in planned.stdout
    tests = _make(tmp_path, "--dry-run", f"VENV={venv}", "PYTHON=" + sys.executable, "test")
    assert "pip install --quiet -e '.[dev]'" in tests.stdout


def _lower_bounds() -> dict[str, str]:
    """Every `name>=version` of pyproject.toml's dependencies and extras."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs.extend(extra)
    bounds = {}
    for spec in specs:
        match = re.match(r"([A-Za-z0-9_.-]+)>=([\w.]+)", spec)
        if match:
            bounds[match.group(1).lower()] = match.group(2)
    return bounds


def test_the_floor_constraints_are_the_declared_lower_bounds() -> None:
    pins = dict(
        line.split("==")
        for line in (REPO / "constraints" / "floor.txt").read_text().splitlines()
        if line and not line.startswith("#")
    )
    bounds = _lower_bounds()
    for name in ("dagster", "greenlet", "anyio", "rich", "distributed", "dagster-postgres"):
        assert name in pins, f"constraints/floor.txt does not pin {name}"
        pinned = tuple(int(p) for p in pins[name].split("."))
        declared = tuple(int(p) for p in bounds[name].split("."))
        # The pin is the bound itself, written out in full (1.12.18, 13.0.0 for 13).
        assert pinned[: len(declared)] == declared and not any(pinned[len(declared) :]), name
    # The Dagster family moves together: webserver, graphql and dg at dagster's version.
    for name in ("dagster-webserver", "dagster-graphql", "dagster-dg-cli", "create-dagster"):
        assert pins[name] == pins["dagster"], name
