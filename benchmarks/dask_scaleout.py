"""Issue 6 benchmark: one run's steps on one event loop vs spread over a Dask cluster.

The fan-out job of the other benchmarks (async producer -> N mapped async ops sleeping S
seconds, each logging twice -> collect), run with dagloop's executor

  loop    every step on the run's event loop, in one process (the default), and
  dask2   `dask: {processes: 2}`: a local Dask cluster of 2 worker processes is started
          for the run (its start-up is inside the measured wall time) and every mapped
          step runs there; producer and collect stay on the loop (placement tag),

on persistent instances (steps on workers need one): SQLite, and PostgreSQL when
`dagster-postgres` is importable and Debian's PostgreSQL server binaries are installed
(a throw-away server is started with benchmarks/harness/postgres.py).

Each case runs in a fresh interpreter; reported: wall time, the orchestrating process's
peak RSS (VmHWM) and the peak RSS summed over it and every process it started (sampled
every 0.2 s), i.e. including the Dask scheduler and workers.

    .venv/bin/python benchmarks/dask_scaleout.py                 # N=1000, S=3
    .venv/bin/python benchmarks/dask_scaleout.py --n 200 --storage sqlite
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES = ("loop", "dask2")


# -- the job (rebuilt by name in Dask workers) ------------------------------------------


def make_job(n: int, sleep: float) -> Any:
    import anyio
    import dagster as dg

    from dagloop.dagster import async_executor

    local = {"dagloop/placement": "local"}

    @dg.op(out=dg.DynamicOut(), tags=local)
    async def create_dynamic_outputs():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield dg.DynamicOutput(value=f"item_{i}", mapping_key=f"key_{i}")

    @dg.op
    async def process_item(context, item: str) -> str:  # type: ignore[no-untyped-def]
        context.log.info(f"[{context.op_handle}] sleeping...")
        if sleep > 0:
            await anyio.sleep(sleep)
        context.log.info(f"[{context.op_handle}] completed")
        return item

    @dg.op(tags=local)
    async def collect_results(context, results: list) -> list:  # type: ignore[no-untyped-def,type-arg]
        context.log.info(f"[{context.op_handle}] collected {len(results)} results")
        assert len(results) == n, (len(results), n)
        return results

    @dg.job(name="fanout_dask_scaleout", executor_def=async_executor)
    def fanout_job() -> None:
        collect_results(create_dynamic_outputs().map(process_item).collect())

    return fanout_job


# -- one case, in a fresh interpreter ----------------------------------------------------


def _tree_rss_mb(root: Any) -> float:
    import psutil

    total = 0
    for proc in [root, *root.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            total += proc.memory_info().rss
    return total / 2**20


def _vmhwm_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def run_case(mode: str, n: int, sleep: float) -> dict[str, Any]:
    import dagster as dg
    import psutil

    execution: dict[str, Any] = {}
    if mode == "dask2":
        execution = {"dask": {"processes": 2}}
    job = dg.build_reconstructable_job(
        "dask_scaleout", "make_job", reconstructable_kwargs={"n": n, "sleep": sleep}
    )
    me = psutil.Process()
    peak = [0.0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.2):
            peak[0] = max(peak[0], _tree_rss_mb(me))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        result = dg.execute_job(
            job, instance=instance, run_config={"execution": {"config": execution}}
        )
        wall = time.perf_counter() - started
        steps = sum(1 for e in result.all_events if e.event_type_value == "STEP_SUCCESS")
    done.set()
    sampler.join()
    return {
        "mode": mode,
        "success": result.success,
        "steps": steps,
        "wall_s": round(wall, 2),
        "peak_rss_mb": round(_vmhwm_mb(), 1),
        "peak_tree_rss_mb": round(max(peak[0], _tree_rss_mb(me)), 1),
    }


# -- instances -------------------------------------------------------------------------


@contextlib.contextmanager
def sqlite_home() -> Iterator[str]:
    with tempfile.TemporaryDirectory(prefix="dagloop-dask-bench-") as home:
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        yield home


@contextlib.contextmanager
def postgres_home() -> Iterator[str]:
    sys.path.insert(0, str(HERE))
    from harness.postgres import pg_server  # the throw-away server of the other benchmarks

    with pg_server() as server, tempfile.TemporaryDirectory(prefix="dagloop-dask-pg-") as home:
        url = server.create_database("dagloop_dask_bench")
        url = url.replace("postgresql://", "postgresql+psycopg2://", 1)  # dagster-postgres' driver
        Path(home, "dagster.yaml").write_text(
            "telemetry:\n  enabled: false\n"
            "storage:\n  postgres:\n    postgres_url: " + json.dumps(url) + "\n"
        )
        yield home


def postgres_unavailable() -> str | None:
    try:
        import dagster_postgres  # noqa: F401
    except ImportError:
        return "dagster-postgres is not installed in this environment"
    sys.path.insert(0, str(HERE))
    from harness.postgres import find_pg_bin

    if find_pg_bin() is None:
        return "PostgreSQL server binaries not found (/usr/lib/postgresql/*/bin)"
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000)
    parser.add_argument("--sleep", type=float, default=3.0)
    parser.add_argument("--storage", nargs="+", default=["sqlite", "postgres"])
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--child", choices=MODES, help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(run_case(args.child, args.n, args.sleep)))
        return

    rows: list[dict[str, Any]] = []
    for storage in args.storage:
        if storage == "postgres" and (why := postgres_unavailable()):
            print(f"postgres: skipped ({why})", file=sys.stderr)
            continue
        home_cm = sqlite_home() if storage == "sqlite" else postgres_home()
        with home_cm as home:
            for mode in args.modes:
                env = {
                    **os.environ,
                    "DAGSTER_HOME": home,
                    # Dask workers rebuild the job from this module by name.
                    "PYTHONPATH": os.pathsep.join(
                        p for p in (str(HERE), os.environ.get("PYTHONPATH")) if p
                    ),
                }
                cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n)]
                cmd += ["--sleep", str(args.sleep)]
                out = subprocess.run(
                    cmd, env=env, cwd=HERE, capture_output=True, text=True, check=False
                )
                if out.returncode != 0:
                    print(out.stderr[-3000:], file=sys.stderr)
                    raise SystemExit(f"{storage}/{mode} failed")
                row = {"storage": storage, **json.loads(out.stdout.strip().splitlines()[-1])}
                rows.append(row)
                print(json.dumps(row), flush=True)

    print(f"\nfan-out N={args.n}, S={args.sleep:g} s, {os.cpu_count()} CPUs")
    print(f"{'storage':9} {'mode':6} {'wall s':>8} {'x loop':>7} {'rss MB':>8} {'tree MB':>8}")
    for row in rows:
        base = next(
            (r for r in rows if r["storage"] == row["storage"] and r["mode"] == "loop"), None
        )
        ratio = f"{row['wall_s'] / base['wall_s']:.2f}" if base else "-"
        print(
            f"{row['storage']:9} {row['mode']:6} {row['wall_s']:8.2f} {ratio:>7} "
            f"{row['peak_rss_mb']:8.1f} {row['peak_tree_rss_mb']:8.1f}"
            + ("" if row["success"] else "  FAILED")
        )
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
