"""Dagster-private names dagloop relies on are all present in the installed Dagster,
and the installed Dagster is inside the range pyproject.toml declares."""

import importlib.metadata
import re
import tomllib
from pathlib import Path

from dagloop.dagster import _internals

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_every_private_name_resolves() -> None:
    missing = [name for name in _internals.__all__ if getattr(_internals, name, None) is None]
    assert missing == []


def _version(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def test_installed_dagster_is_inside_the_declared_range() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    (spec,) = [
        s for s in project["project"]["optional-dependencies"]["dagster"] if s.startswith("dagster")
    ]
    low, high = re.match(r"dagster>=([\d.]+),<([\d.]+)", spec).groups()  # type: ignore[union-attr]
    installed = _version(importlib.metadata.version("dagster"))
    assert _version(low) <= installed < _version(high)


def test_the_shapes_streaming_resolution_writes_into() -> None:
    """`resolve_mapping_key_ahead` adds steps the way Dagster's own resolution does: to
    the plan's step maps and to ActiveExecution's pending steps. Fails loudly if a
    Dagster release renames or reshapes any of them."""
    import dagster as dg

    from dagloop.dagster._internals import (
        RetryMode,
        create_execution_plan,
        mapped_steps_by_dynamic_output,
        resolve_mapping_key_ahead,
    )

    @dg.op(out=dg.DynamicOut(int))
    def produce():
        yield dg.DynamicOutput(1, mapping_key="one")

    @dg.op
    def work(item: int) -> int:
        return item

    @dg.op
    def total(values: list[int]) -> int:
        return len(values)

    @dg.job
    def shape_job():
        total(produce().map(work).collect())

    plan = create_execution_plan(shape_job)
    mapped = mapped_steps_by_dynamic_output(plan)
    assert list(mapped) == [("produce", "result")]
    (unresolved,) = mapped[("produce", "result")]
    assert unresolved.key == "work[?]"
    # Not entered: exiting would raise for the steps left pending.
    active = plan.start(retry_mode=RetryMode.DISABLED)
    assert isinstance(active._pending, dict)
    added = resolve_mapping_key_ahead(plan, active, [unresolved], "produce", "result", "one")
    assert added == ["work[one]"]
    assert plan.get_step_by_key("work[one]").key == "work[one]"
    assert plan.executable_map["work[one]"] == plan.step_dict_by_key["work[one]"].handle
    assert active._pending["work[one]"] == set()  # the producer is left out
    # A key seen before (a retried producer yielding it again) is left alone.
    assert resolve_mapping_key_ahead(plan, active, [unresolved], "produce", "result", "one") == []
    # Dagster's own resolution at the producer's success skips what is in place.
    assert set(plan.resolve({"produce": {"result": ["one"]}})) == {"total"}
