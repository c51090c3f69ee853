"""The Dagster executors under test: one entry per executor (and per config variant).

Adding an executor (e.g. the Dask-backed ``processes: 2`` mode of issue 6, or
``dagster-dask``) is one more ``ExecutorSpec`` in ``EXECUTORS``; suites pick entries by key.
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
        # Issue 6 (scale-out on Dask) adds e.g.:
        #   ExecutorSpec(key="dagloop_dask2", label="dagloop processes=2",
        #                target="dagloop.dagster:async_executor", config={"processes": 2}),
        #   ExecutorSpec(key="dagster_dask", label="dagster-dask",
        #                target="dagster_dask:dask_executor", needs_persistent_instance=True),
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
