"""The Python examples of the executor's guides run as written (docs/engine.md has
tests/engine/test_docs.py, docs/assets.md tests/test_docs_assets.py)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = ("how-it-works.md", "interrupts.md", "streaming.md", "compute-logs.md")
EXAMPLES = [
    pytest.param(source, id=f"{name}-{index}")
    for name in GUIDES
    for index, source in enumerate(
        re.findall(r"```python\n(.*?)```", (DOCS / name).read_text(encoding="utf-8"), re.S)
    )
]


def test_the_guides_have_examples() -> None:
    assert EXAMPLES


@pytest.mark.parametrize("source", EXAMPLES)
def test_example_runs(source: str) -> None:
    namespace: dict[str, object] = {"__name__": "docs_example"}
    exec(compile(source, "docs", "exec", dont_inherit=True), namespace)
    assert len(namespace) > 1  # the example defined something
