"""Scale a run's steps out to a Dask cluster: executor config ``dask:`` (docs/dask.md).

Importing this package does not import ``distributed``; the executor does, for runs
configured with ``dask``.
"""

from dagloop.dagster.dask.config import DaskConfig
from dagloop.dagster.tags import PLACEMENT_TAG, Placement

__all__ = ["PLACEMENT_TAG", "DaskConfig", "Placement"]
