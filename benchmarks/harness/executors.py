"""The Dagster executors under test: one entry per executor (and per config variant).

Adding an executor (or a config variant) is one more ``ExecutorSpec`` in ``EXECUTORS``;
suites pick entries by key.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class ExecutorSpec:
    key: str  # stable id used in results JSON
    label: str  # human label in tables / plots
    target: str  # "module:attribute" of the ExecutorDefinition
    config: dict[str, Any] = field(default_factory=dict)  # run_config["execution"]["config"]
    max_n_sleep: int | None = None  # largest N run with S > 0 (None: all)
    max_n: int | None = None  # largest N run at all (None: all)
    needs_persistent_instance: bool = False  # cannot run on an ephemeral instance
    package: str | None = None  # distribution whose version we report


EXECUTORS: dict[str, ExecutorSpec] = {
    spec.key: spec
    for spec in [
        ExecutorSpec(
            key="dagloop",
            label="dagloop async_executor",
            target="dagloop.dagster:async_executor",
            package="dagloop",
        ),
        ExecutorSpec(
            key="dagster_async_executor",
            label="dagster-async-executor 0.0.4",
            target="dagster_async_executor:async_executor",
            package="dagster-async-executor",
        ),
        ExecutorSpec(
            key="in_process",
            label="Dagster in_process_executor",
            target="dagster:in_process_executor",
            max_n_sleep=20,
            package="dagster",
        ),
        ExecutorSpec(
            key="multiprocess",
            label="Dagster multiprocess_executor",
            target="dagster:multiprocess_executor",
            max_n_sleep=20,
            max_n=20,
            needs_persistent_instance=True,
            package="dagster",
        ),
        # The `hosting` suite: dagloop with each way of hosting a step's bookkeeping.
        ExecutorSpec(
            key="dagloop_greenlet",
            label="dagloop step_host=greenlet",
            target="dagloop.dagster:async_executor",
            config={"step_host": "greenlet"},
            package="dagloop",
        ),
        # "a worker thread per in-flight step". Since commit e93de71 thread-hosted async
        # steps have a pool of their own and sync_threads no longer caps them; the large
        # value is kept so this entry matches the recorded results (measured with it).
        ExecutorSpec(
            key="dagloop_thread",
            label="dagloop step_host=thread (sync_threads=1100)",
            target="dagloop.dagster:async_executor",
            config={"step_host": "thread", "sync_threads": 1100},
            package="dagloop",
        ),
        ExecutorSpec(
            key="dagloop_thread_default_pool",
            label="dagloop step_host=thread (default sync_threads)",
            target="dagloop.dagster:async_executor",
            config={"step_host": "thread"},
            package="dagloop",
        ),
        # The `dask` suite: one run's steps spread over 2 local worker processes.
        # Neither is flagged needs_persistent_instance: that suite attempts every instance
        # and records why a mode cannot run there.
        # steps_per_worker is set explicitly, whatever dagloop's default (64 before commit
        # cbc39e0, 512 since): each worker process hosts up to 512 steps at once, so
        # N = 1000 S = 3 runs without waves of 64.
        ExecutorSpec(
            key="dagloop_dask2",
            label="dagloop dask processes=2 steps_per_worker=512",
            target="dagloop.dagster:async_executor",
            config={"dask": {"processes": 2, "steps_per_worker": 512}},
            package="dagloop",
        ),
        # The `storage` suite: who writes the cluster steps' entries.
        ExecutorSpec(
            key="dagloop_dask2_run",
            label="dagloop dask processes=2, events_written_by=run",
            target="dagloop.dagster:async_executor",
            config={"dask": {"processes": 2, "steps_per_worker": 512, "events_written_by": "run"}},
            package="dagloop",
        ),
        ExecutorSpec(
            key="dagloop_dask2_workers",
            label="dagloop dask processes=2, events_written_by=workers",
            target="dagloop.dagster:async_executor",
            config={
                "dask": {"processes": 2, "steps_per_worker": 512, "events_written_by": "workers"}
            },
            package="dagloop",
        ),
        # The `scale` suite: per-step stdout/stderr capture against one capture
        # for the run, whatever the default is.
        ExecutorSpec(
            key="dagloop_per_run",
            label="dagloop compute_logs=per_run",
            target="dagloop.dagster:async_executor",
            config={"compute_logs": "per_run"},
            package="dagloop",
        ),
        ExecutorSpec(
            key="dagloop_per_step",
            label="dagloop compute_logs=per_step",
            target="dagloop.dagster:async_executor",
            config={"compute_logs": "per_step"},
            package="dagloop",
        ),
        # The `scale` suite: the 10,000-step fan-out with Dagster's own cap on steps in flight.
        ExecutorSpec(
            key="dagloop_max1000",
            label="dagloop max_concurrent=1000",
            target="dagloop.dagster:async_executor",
            config={"max_concurrent": 1000},
            package="dagloop",
        ),
        # Dagster's own Dask executor on a LocalCluster of 2 worker processes. dagster-dask
        # forces threads_per_worker=1 ("Dagster is not thread-safe"); the dashboard is off,
        # as in dagloop's `processes: K` cluster.
        ExecutorSpec(
            key="dagster_dask",
            label="dagster-dask 0.29.27 dask_executor (2 workers)",
            target="dagster_dask:dask_executor",
            config={"cluster": {"local": {"n_workers": 2, "dashboard_address": None}}},
            package="dagster-dask",
        ),
    ]
}


def load_executor_def(key: str) -> Any:
    spec = EXECUTORS[key]
    module_name, attr = spec.target.split(":")
    return getattr(importlib.import_module(module_name), attr)


def availability(key: str) -> str | None:
    """None if the executor can be imported here, else a short reason."""
    try:
        load_executor_def(key)
    except Exception as e:  # ImportError, AttributeError, anything raised at import
        return f"not available: {type(e).__name__}: {e}"[:200]
    return None
