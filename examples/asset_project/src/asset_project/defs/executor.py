# src/asset_project/defs/executor.py
import dagster as dg

from dagloop.dagster import async_executor

# Every job of the code location that names no executor of its own runs on dagloop's,
# the asset jobs `dg dev` and `dg launch --assets` build included.
defs = dg.Definitions(executor=async_executor)
