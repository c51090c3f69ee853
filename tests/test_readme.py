"""README.md is true: every Python example runs as written (and the test functions it
shows pass), it opens with what dagloop is and how to install it, every error type it
names can be imported, and it reads as a user's document."""

import asyncio
import builtins
import re
from pathlib import Path

import dagster
import pytest

import dagloop
import dagloop.dagster

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
TEXT = README.read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", TEXT, flags=re.DOTALL)


@pytest.mark.parametrize("source", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_readme_example_runs(source: str) -> None:
    namespace: dict[str, object] = {"__name__": "readme_example"}
    exec(compile(source, str(README), "exec"), namespace)
    assert len(namespace) > 1  # the example defined something
    for name, value in list(namespace.items()):
        if name.startswith("test_") and callable(value):
            value()  # a test the README shows passes


def test_readme_opens_with_what_dagloop_is_then_how_to_install() -> None:
    head = TEXT.split("\n## ")[0]
    assert "asyncio event loop" in head and "Dagster" in head
    install = TEXT.split("\n## Install\n", 1)[1].split("\n## ")[0]
    assert 'pip install "dagloop[dagster]"' in install
    sections = re.findall(r"^## (.+)$", TEXT, flags=re.MULTILINE)
    assert sections[:4] == ["Install", "Use it: one line", "Quickstart", "Testing async jobs"]
    assert {"Performance", "Termination and interrupts", "Supported versions"} <= set(sections)


def test_every_error_type_the_readme_names_can_be_imported() -> None:
    named = set(re.findall(r"`(\w+Error)`", TEXT))
    ours = {"ExecutorConfigError", "EventLogWriteError", "StepTimeoutError"}
    assert ours <= named
    for name in ours:
        assert name in dagloop.dagster.__all__
        assert issubclass(getattr(dagloop.dagster, name), Exception)
    # Anything else it names is Dagster's, the engine's or Python's own.
    others = {
        name
        for name in named - ours
        if not any(hasattr(module, name) for module in (dagster, dagloop, builtins, asyncio))
    }
    assert others == set()


def test_no_internal_references_in_the_user_documents() -> None:
    for path in (README, ROOT / "CHANGELOG.md"):
        text = path.read_text()
        assert not re.search(r"\b[Ii]ssue \d+|\bseed\b|[Tt]argets? missed", text), path.name


def test_contributing_starts_with_the_two_commands() -> None:
    head = (ROOT / "CONTRIBUTING.md").read_text().splitlines()[:12]
    assert "make demo" in "\n".join(head) and "make test" in "\n".join(head)


def test_readme_is_short_and_links_every_guide() -> None:
    assert len(TEXT) <= 15_000
    linked = set(re.findall(r"\]\((docs/[\w.-]+\.md)", TEXT))
    for link in linked:
        assert (ROOT / link).is_file(), link
    guides = {
        f"docs/{name}.md"
        for name in (
            "assets",
            "how-it-works",
            "interrupts",
            "streaming",
            "compute-logs",
            "dask",
            "engine",
            "performance",
            "architecture",
        )
    }
    assert guides <= linked, guides - linked


def test_readme_says_what_the_two_make_targets_do() -> None:
    contributing = TEXT.split("\n## Contributing\n", 1)[1]
    assert "`make demo` sets everything up and runs the quickstart fan-out job" in contributing
    assert "`make test` sets everything up and runs the whole test suite" in contributing
