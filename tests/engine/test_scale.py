"""Scale: node count against peak memory, each run in a fresh interpreter so the peak
RSS belongs to that run alone."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

PROBE = """
import asyncio, json, sys, time
from dagloop import DAG, AsyncDAGExecutor

n, width = int(sys.argv[1]), int(sys.argv[2])
names = [f"node{i}" for i in range(n)]
builder = DAG.builder().add_nodes(names)
for i in range(width, n):
    builder.add_edge(names[i - width], names[i])
    if i % width:
        builder.add_edge(names[i - width - 1], names[i])
dag = builder.build()

async def work():
    await asyncio.sleep(0)
    return 1

def sync_work():
    return 2

tasks = {name: (sync_work if i % 10 == 0 else work) for i, name in enumerate(names)}

async def main():
    return await AsyncDAGExecutor(dag, max_workers=4).execute(tasks)

started = time.perf_counter()
result = asyncio.run(main())
elapsed = time.perf_counter() - started
# VmHWM belongs to this process image; ru_maxrss would also count the parent's RSS
# at fork time (a pytest process that imported dagster is already ~200 MB).
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print(json.dumps({"succeeded": result.succeeded, "edges": dag.edge_count(),
                  "peak_mb": peak_kib / 1024, "seconds": elapsed}))
"""


def probe(n: int, width: int) -> dict[str, float]:
    completed = subprocess.run(
        [sys.executable, "-c", PROBE, str(n), str(width)],
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    report: dict[str, float] = json.loads(completed.stdout.strip().splitlines()[-1])
    return report


@pytest.mark.parametrize(
    ("n", "width", "limit_mb"),
    [(10_000, 100, 150), (100_000, 1_000, 1024), (100_000, 100_000, 1024)],
    ids=["10k-under-150MB", "100k-under-1GB", "100k-all-ready-at-once-under-1GB"],
)
def test_large_graphs_complete_within_memory_budget(n: int, width: int, limit_mb: int) -> None:
    report = probe(n, width)
    assert report["succeeded"] == n
    assert (report["edges"] == 0) == (width == n)
    assert report["peak_mb"] < limit_mb, report
