"""How a local Dask cluster starts its worker processes: forked from a server that
imported the heavy modules once, rather than spawned, each importing them again.

A spawned worker starts a new interpreter and imports `distributed`, then, when the run
opens its session there, Dagster: most of a local cluster's start-up, paid once per
worker. A forkserver imports them once (`set_forkserver_preload`) and forks each worker
from that state. The forked workers also exit at once when the cluster closes.

The forkserver is one per process (`multiprocessing`'s own) and keeps the modules it was
first started with: later clusters of the same process reuse it as it is.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.forkserver
from collections.abc import Sequence

#: Dask's default start method for worker processes: left to Dask's own, a forkserver
#: preloaded here replaces it; a method configured otherwise is kept.
DASK_DEFAULT_METHOD = "spawn"
FORKSERVER = "forkserver"


def preloaded_start_method(configured: str, preload: Sequence[str]) -> str:
    """The start method for a local cluster's workers, given Dask's `configured` one:
    a forkserver that imports `distributed` and `preload` first, where the platform has
    forkservers and the configuration leaves the choice to Dask; else `configured`."""
    if configured != DASK_DEFAULT_METHOD:
        return configured
    if FORKSERVER not in multiprocessing.get_all_start_methods():
        return configured
    context = multiprocessing.get_context(FORKSERVER)
    # Only the first start reads the preload list; once the server runs, Dask setting
    # its own list when it starts workers changes nothing.
    context.set_forkserver_preload(["distributed", *preload])
    multiprocessing.forkserver.ensure_running()
    return FORKSERVER


def skip_dasks_preload() -> None:
    """Once `preloaded_start_method` started the forkserver: a nanny starting a worker
    by forkserver first imports, into this process, every package Dask can use (pandas
    among them), to name them in the server's preload list. The server runs already,
    with its own list, so those imports would only cost this process their time on the
    cluster's critical path. Dask's own flag says they were done."""
    import distributed.utils

    if hasattr(distributed.utils, DASK_PRELOAD_FLAG):
        setattr(distributed.utils, DASK_PRELOAD_FLAG, True)


#: `distributed.utils`' record that its forkserver preload list was set (private: its
#: absence only costs the imports again; tests/dask/test_local_cluster.py checks it).
DASK_PRELOAD_FLAG = "_forkserver_preload_set"
