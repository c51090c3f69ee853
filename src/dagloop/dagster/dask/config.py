"""Config of the executor's Dask scale-out: where the cluster is, which steps go there.

Imports nothing from `distributed`, so the executor's schema loads without the extra.
`DaskConfig`'s field defaults are the only statement of each default: the schema's
`default_value`s and `from_config` read them.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import dagster as dg

from dagloop.dagster.dask.messages import HEARTBEAT_SECONDS
from dagloop.dagster.errors import ExecutorConfigError
from dagloop.dagster.schema_defaults import dataclass_default
from dagloop.dagster.tags import PLACEMENT_TAG, Placement, tagged_placement
from dagloop.runtime.dask_client import TlsFiles

EventsWrittenBy = Literal["auto", "run", "workers"]
#: A worker is taken as lost after missing this many heartbeats at least.
MIN_MISSED_HEARTBEATS = 3


@dataclass(frozen=True)
class DaskConfig:
    address: str | None = None
    processes: int | None = None
    steps_per_worker: int = 512
    steps_on_loop_while_starting: int = 1
    placement: Placement = "cluster"
    events_written_by: EventsWrittenBy = "auto"
    heartbeat_timeout_seconds: float = 60.0
    tls: TlsFiles | None = None

    @classmethod
    def from_config(cls, value: Mapping[str, Any] | None) -> DaskConfig | None:
        """Validate the `dask:` value (the schema's shape; a key left out or None takes
        the default); None: no Dask."""
        if value is None:
            return None
        given = {key: item for key, item in value.items() if item is not None}
        default = cls()
        address = given.get("address", default.address)
        processes = given.get("processes", default.processes)
        if (address is None) == (processes is None):
            raise ExecutorConfigError(
                "dask", dict(value), "expected exactly one of 'address' and 'processes'"
            )
        if address is not None and not address.strip():
            raise ExecutorConfigError("dask.address", address, "expected a scheduler address")
        if processes is not None and processes < 1:
            raise ExecutorConfigError("dask.processes", processes, "expected a positive integer")
        slots = given.get("steps_per_worker", default.steps_per_worker)
        if slots < 1:
            raise ExecutorConfigError("dask.steps_per_worker", slots, "expected a positive integer")
        lent = given.get("steps_on_loop_while_starting", default.steps_on_loop_while_starting)
        if lent < 0:
            raise ExecutorConfigError(
                "dask.steps_on_loop_while_starting", lent, "expected 0 or a positive integer"
            )
        silence = given.get("heartbeat_timeout_seconds", default.heartbeat_timeout_seconds)
        if silence < MIN_MISSED_HEARTBEATS * HEARTBEAT_SECONDS:
            raise ExecutorConfigError(
                "dask.heartbeat_timeout_seconds",
                silence,
                f"expected at least {MIN_MISSED_HEARTBEATS * HEARTBEAT_SECONDS:g} seconds "
                f"(workers send a heartbeat every {HEARTBEAT_SECONDS:g} s)",
            )
        return cls(
            tls=_tls(given.get("tls"), address),
            address=address,
            processes=processes,
            steps_per_worker=slots,
            steps_on_loop_while_starting=lent,
            placement=given.get("placement", default.placement),
            events_written_by=given.get("events_written_by", default.events_written_by),
            heartbeat_timeout_seconds=float(silence),
        )

    def placement_of(self, op_name: str, step_key: str, tags: Mapping[str, str]) -> Placement:
        return tagged_placement(op_name, step_key, tags) or self.placement


def _tls(value: Mapping[str, Any] | None, address: str | None) -> TlsFiles | None:
    """The run process's own credentials for a cluster that requires TLS, checked before
    the run starts: each file must be there, and the scheduler reached over TLS."""
    if value is None:
        return None
    if address is None or not address.strip().startswith("tls://"):
        raise ExecutorConfigError(
            "dask.tls",
            dict(value),
            "expected with an 'address' of a scheduler reached over TLS (tls://...)",
        )
    files = TlsFiles(ca_file=value["ca_file"], cert=value["cert"], key=value.get("key"))
    for key, path in [("ca_file", files.ca_file), ("cert", files.cert), ("key", files.key)]:
        if path is not None and not os.path.isfile(path):
            raise ExecutorConfigError(f"dask.tls.{key}", path, "no such file")
    return files


def _default(name: str) -> Any:
    return dataclass_default(DaskConfig, name)


#: The shape of the executor's `dask:` key (config.py makes it optional, default off).
DASK_CONFIG_SHAPE = dg.Shape(
    {
        "address": dg.Field(
            dg.Noneable(str),
            default_value=_default("address"),
            description="Address of an existing Dask scheduler, e.g. 'tcp://host:8786'.",
        ),
        "processes": dg.Field(
            dg.Noneable(int),
            default_value=_default("processes"),
            description=(
                "Start a local Dask cluster of this many worker processes for the run "
                "(closed when the run ends). Exactly one of 'address' and "
                "'processes' is set."
            ),
        ),
        "steps_per_worker": dg.Field(
            int,
            default_value=_default("steps_per_worker"),
            description=(
                "With 'processes': how many steps one worker process runs at once "
                "(async steps share the worker's loop, so this costs no threads; sync "
                "steps also wait for one of its 'sync_threads'). With 'address' the "
                "workers' own nthreads applies."
            ),
        ),
        "steps_on_loop_while_starting": dg.Field(
            int,
            default_value=_default("steps_on_loop_while_starting"),
            description=(
                "With 'processes': while the local cluster starts, up to this many "
                "steps at once that are placed on the cluster by the 'placement' "
                "default (not by their op's tag) run on the run's loop instead of "
                "waiting for it; each runs there to its end. 0: they wait."
            ),
        ),
        "events_written_by": dg.Field(
            dg.Enum(
                "DagloopEventsWrittenBy",
                [dg.EnumValue("auto"), dg.EnumValue("run"), dg.EnumValue("workers")],
            ),
            default_value=_default("events_written_by"),
            description=(
                "Who writes the event-log entries of steps on the cluster: 'run' "
                "(workers send them, encoded, to the run process, which writes them in "
                "order, in batches; SQLite is not contended) or 'workers' (each worker "
                "writes its own, in batches, in parallel). 'auto': 'workers', but "
                "'run' for storage in the run process's memory."
            ),
        ),
        "heartbeat_timeout_seconds": dg.Field(
            float,
            default_value=_default("heartbeat_timeout_seconds"),
            description=(
                "A worker whose connection to the run process carries nothing for this "
                "long (workers send a heartbeat every second) is taken as lost: a "
                "process stopped or hung as a whole closes no connection. Its begun "
                "steps fail with WorkerLostError, or retry."
            ),
        ),
        "tls": dg.Field(
            dg.Noneable(
                dg.Shape(
                    {
                        "ca_file": dg.Field(str, description="The cluster's CA certificate."),
                        "cert": dg.Field(str, description="This client's certificate."),
                        "key": dg.Field(
                            dg.Noneable(str),
                            default_value=None,
                            description="Its private key, unless the certificate file "
                            "holds it too.",
                        ),
                    }
                )
            ),
            default_value=None,
            description=(
                "With an 'address' of a cluster that requires TLS (tls://...): the run "
                "process's credentials, PEM files it reads. Without this key, Dask's own "
                "configuration applies (distributed.comm.tls.*). The workers use their "
                "own."
            ),
        ),
        "placement": dg.Field(
            dg.Enum(
                "DagloopPlacement",
                [dg.EnumValue("cluster"), dg.EnumValue("local")],
            ),
            default_value=_default("placement"),
            description=(
                f"Where steps run unless their op's tag '{PLACEMENT_TAG}' says "
                "otherwise: 'cluster' (Dask workers) or 'local' (the run's loop)."
            ),
        ),
    }
)
