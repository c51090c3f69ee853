"""Config of the executor's Dask scale-out: where the cluster is, which steps go there.

Imports nothing from `distributed`, so the executor's schema loads without the extra.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg

Placement = Literal["local", "cluster"]
PLACEMENTS: tuple[Placement, ...] = ("local", "cluster")

#: Op tag choosing where one op's steps run: "local" (the run's event loop) or "cluster".
PLACEMENT_TAG = "dagloop/placement"

DASK_CONFIG_FIELD = dg.Field(
    dg.Noneable(
        dg.Shape(
            {
                "address": dg.Field(
                    dg.Noneable(str),
                    default_value=None,
                    description="Address of an existing Dask scheduler, e.g. 'tcp://host:8786'.",
                ),
                "processes": dg.Field(
                    dg.Noneable(int),
                    default_value=None,
                    description=(
                        "Start a local Dask cluster of this many worker processes for the run "
                        "(closed when the run ends). Exactly one of 'address' and "
                        "'processes' is set."
                    ),
                ),
                "steps_per_worker": dg.Field(
                    int,
                    default_value=512,
                    description=(
                        "With 'processes': how many steps one worker process hosts at once "
                        "(its Dask task slots; async steps share the worker's loop, so this "
                        "costs no threads). With 'address' the workers' own nthreads applies."
                    ),
                ),
                "events_written_by": dg.Field(
                    dg.Enum(
                        "DagloopEventsWrittenBy",
                        [dg.EnumValue("auto"), dg.EnumValue("run"), dg.EnumValue("workers")],
                    ),
                    default_value="auto",
                    description=(
                        "Who writes the event-log entries of steps on the cluster: 'run' "
                        "(workers send them to the run process, which writes them in order, "
                        "in batches: one transaction for many entries, and SQLite is not "
                        "contended) or 'workers' (each worker writes its own, one "
                        "transaction per entry, as Dagster's multiprocess children do). "
                        "'auto': 'run' where the run process writes in batches (SQLite, "
                        "PostgreSQL), 'workers' on other storages."
                    ),
                ),
                "placement": dg.Field(
                    dg.Enum(
                        "DagloopPlacement",
                        [dg.EnumValue("cluster"), dg.EnumValue("local")],
                    ),
                    default_value="cluster",
                    description=(
                        f"Where steps run unless their op's tag '{PLACEMENT_TAG}' says "
                        "otherwise: 'cluster' (Dask workers) or 'local' (the run's loop)."
                    ),
                ),
            }
        )
    ),
    default_value=None,
    description=(
        "Scale steps out to a Dask cluster: {address: ...} or {processes: K}. Needs a "
        "reconstructable job and a persistent instance."
    ),
)


@dataclass(frozen=True)
class DaskConfig:
    address: str | None
    processes: int | None
    steps_per_worker: int = 512
    placement: Placement = "cluster"
    events_written_by: Literal["auto", "run", "workers"] = "auto"

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | None) -> DaskConfig | None:
        if value is None:
            return None
        # Local import: config.py imports this module.
        from dagloop.dagster.config import ExecutorConfigError

        address = value.get("address")
        processes = value.get("processes")
        if (address is None) == (processes is None):
            raise ExecutorConfigError(
                "dask", dict(value), "expected exactly one of 'address' and 'processes'"
            )
        if address is not None and not address.strip():
            raise ExecutorConfigError("dask.address", address, "expected a scheduler address")
        if processes is not None and processes < 1:
            raise ExecutorConfigError("dask.processes", processes, "expected a positive integer")
        slots = value.get("steps_per_worker", 512)
        if slots < 1:
            raise ExecutorConfigError("dask.steps_per_worker", slots, "expected a positive integer")
        return cls(
            address=address,
            processes=processes,
            steps_per_worker=slots,
            placement=value.get("placement", "cluster"),
            events_written_by=value.get("events_written_by", "auto"),
        )

    def placement_of(self, op_name: str, step_key: str, tags: Mapping[str, str]) -> Placement:
        return tagged_placement(op_name, step_key, tags) or self.placement


def tagged_placement(op_name: str, step_key: str, tags: Mapping[str, str]) -> Placement | None:
    """The placement an op's tag chooses, None if untagged; a bad value names the op."""
    tagged = tags.get(PLACEMENT_TAG)
    if tagged is None:
        return None
    if tagged not in PLACEMENTS:
        raise dg.DagsterInvalidConfigError(
            f"Op '{op_name}' (step '{step_key}'): tag '{PLACEMENT_TAG}' must be one of "
            f"{', '.join(repr(p) for p in PLACEMENTS)}, got {tagged!r}.",
            [],
            tagged,
        )
    return tagged
