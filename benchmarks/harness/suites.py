"""The registry of suites (each in a module of its own, `suite_*.py`): which exist, which
need the PostgreSQL server, and how a run restricted to some instances is merged into an
earlier result. A new suite is one module and one entry in ``SUITES`` (plus, usually, a
few ``ExecutorSpec`` entries in ``executors.py`` and a table function in ``report.py``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from harness.context import INSTANCES, Ctx, context, now
from harness.dagster_runs import add_ratios
from harness.suite_assets import assets_suite
from harness.suite_cost import cost_suite
from harness.suite_dask import add_dask_ratios, dask_cpu_suite, dask_suite, dask_targets
from harness.suite_engine import engine_suite
from harness.suite_fanout import fanout_suite, fanout_targets, merge_cases
from harness.suite_hosting import hosting_comparisons, hosting_suite
from harness.suite_scale import scale_suite
from harness.suite_scaleout import scaleout_suite
from harness.suite_storage import storage_suite
from harness.suite_streaming import streaming_suite
from harness.suite_termination import termination_suite

__all__ = [
    "INSTANCES",
    "MERGEABLE",
    "NEEDS_PG",
    "SUITES",
    "Ctx",
    "can_merge",
    "context",
    "merge_cases",
    "merge_instances",
    "now",
]


def can_merge(old: dict[str, Any], new: dict[str, Any]) -> bool:
    """Same suite and mode (and for the dask suites the same N, S and CPU work)."""
    same = [old.get(k) == new.get(k) for k in ("suite", "mode")]
    if new["suite"] in ("dask", "dask_cpu"):
        same += [
            old["params"].get(k) == new["params"].get(k) for k in ("n", "sleep", "cpu_iterations")
        ]
    return all(same)


def merge_instances(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """Fold a run restricted with --instances into an earlier full result of the same suite:
    the new run's instances replace the old ones, ratios and verdicts are recomputed."""
    redone = set(new["params"]["instances"])
    order = [i for i in INSTANCES if i in redone or i in old["params"]["instances"]]
    cases = [c for c in old["cases"] if c["instance"] not in redone] + new["cases"]
    for c in cases:
        for k in [k for k in c if k.startswith("ratio_")] + ["lower_bound"]:
            c.pop(k, None)
    merged = {**new, "cases": cases}
    merged["params"] = {**new["params"], "instances": order}
    if new["suite"] in ("dask", "dask_cpu"):
        add_dask_ratios(cases)
    else:
        c0 = {**{k: v for k, v in old.get("c0", {}).items() if k not in redone}, **new["c0"]}
        add_ratios(cases, c0)
        merged["c0"] = c0
    merged["merged_with"] = {
        "command": old["command"],
        "started": old["started"],
        "instances_kept": [i for i in old["params"]["instances"] if i not in redone],
        "duration_s": old["duration_s"],
    }
    merged["duration_s"] = round(old["duration_s"] + new["duration_s"], 1)
    if new["suite"] == "fanout":
        merged["targets"] = fanout_targets(cases, order)
    elif new["suite"] == "hosting":
        p = new["params"]
        merged["comparisons"] = hosting_comparisons(cases, order, p["sleep"], p["n"])
    elif new["suite"] in ("dask", "dask_cpu"):
        p = new["params"]
        merged["targets"] = dask_targets(cases, order, p["n"], p["sleep"], p)
    return merged


SUITES: dict[str, Callable[[Ctx], dict[str, Any]]] = {
    "scale": scale_suite,
    "cost": cost_suite,
    "fanout": fanout_suite,
    "hosting": hosting_suite,
    "engine": engine_suite,
    "dask": dask_suite,
    "dask_cpu": dask_cpu_suite,
    "scaleout": scaleout_suite,
    "storage": storage_suite,
    "termination": termination_suite,
    "streaming": streaming_suite,
    "assets": assets_suite,
}


def _pg_unless_quick(quick: bool, instances: list[str] | None) -> bool:
    return not quick and (instances is None or "postgres" in instances)


def _pg_if_asked(quick: bool, instances: list[str] | None) -> bool:
    return "postgres" in instances if instances else not quick


#: does a suite need the PostgreSQL server, given --quick and --instances?
NEEDS_PG: dict[str, Callable[[bool, list[str] | None], bool]] = {
    "scale": lambda quick, instances: not quick,  # the 10,000-step run on PostgreSQL
    "cost": lambda quick, instances: False,
    "termination": lambda quick, instances: False,
    "streaming": lambda quick, instances: False,
    "fanout": _pg_unless_quick,  # quick mode runs the ephemeral instance only
    "hosting": _pg_unless_quick,
    "engine": lambda quick, instances: False,
    "dask": _pg_if_asked,  # quick mode: ephemeral and SQLite unless --instances says more
    "dask_cpu": _pg_if_asked,  # quick mode: SQLite unless --instances says more
    "scaleout": _pg_if_asked,  # quick mode: SQLite unless --instances says more
    "storage": lambda quick, instances: instances is None or "postgres" in instances,
    "assets": _pg_if_asked,  # quick mode: in memory and SQLite unless --instances says more
}
#: suites whose cases a run restricted with --instances merges into the earlier results
MERGEABLE = ("fanout", "hosting", "dask", "dask_cpu")
