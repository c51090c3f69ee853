"""Issues 5, 10 and 19 load case: an N-step dynamic fan-out (async producer, N mapped
async ops sleeping S seconds, a collector; `jobs.fanout`) through one executor on one
storage, console logging at WARNING. Reported: success (read back from the instance),
wall time of `execute_job`, ms per step, the peak RSS of this process (the run's: VmHWM
from /proc/self/status, which starts afresh at exec; ru_maxrss too) and the machine's
load. Run in a fresh interpreter (this script) so the peak is its own.

Before issue 19 this script ran S = 0 only (no `--sleep`): its 10,000-step numbers
(157-160 s, 318-337 MB) were S = 0 runs, which keep few steps in flight at once, while
the issue's "10,000 x 3 s" figures (84-95 s, 535-544 MB) hold all 10,000 in flight.

    benchmarks/.venv/bin/python benchmarks/dagster_load.py                     # dagloop, ephemeral
    benchmarks/.venv/bin/python benchmarks/dagster_load.py --instance postgres
    benchmarks/.venv/bin/python benchmarks/dagster_load.py --executor in_process --instance sqlite
    benchmarks/.venv/bin/python benchmarks/dagster_load.py --instance postgres --tracemalloc 10

`--tracemalloc K` traces allocations (slower: its wall is not comparable) and keeps the
top K source lines of the snapshot holding the most memory, sampled every 15 s and at
the end of the run. PostgreSQL: a throw-away server (harness/postgres.py).

results/dagster_load.json holds one case per (executor, instance, traced or not); a run
replaces its own case and keeps the others.
"""

import argparse
import json
import os
import resource
import sys
import tempfile
import threading
import time
import tracemalloc
from contextlib import ExitStack
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
QUIET = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--sleep", type=float, default=3.0, help="seconds each mapped step sleeps")
    parser.add_argument("--executor", default="dagloop", choices=["dagloop", "in_process"])
    parser.add_argument(
        "--instance", default="ephemeral", choices=["ephemeral", "sqlite", "postgres"]
    )
    parser.add_argument("--tracemalloc", type=int, default=0, metavar="K")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "dagster_load.json")
    args = parser.parse_args()

    sys.path.insert(0, str(HERE))
    os.chdir(HERE)
    import dagster as dg
    from harness.dagster_case import check_run, make_instance
    from harness.postgres import pg_server

    with ExitStack() as stack:
        tmp = stack.enter_context(tempfile.TemporaryDirectory(prefix="dagloop-load-"))
        pg_url = None
        if args.instance == "postgres":
            pg_url = stack.enter_context(pg_server()).create_database("load")
        instance = make_instance(args.instance, tmp, pg_url)
        recon = dg.build_reconstructable_job(
            "jobs.fanout",
            "make_job",
            reconstructable_kwargs={"executor": args.executor, "n": args.n, "sleep": args.sleep},
            reconstructor_working_directory=str(HERE),
        )
        tracer = _Tracer(args.tracemalloc) if args.tracemalloc else None
        load_before = os.getloadavg()[0]
        started = time.perf_counter()
        result = dg.execute_job(recon, instance=instance, run_config=QUIET)
        wall = time.perf_counter() - started
        traced = tracer.stop() if tracer else None
        checked = check_run(instance, result, args.n)
        instance.dispose()
    maxrss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    from harness.meta import git_info
    from harness.proc import peak_rss_self_mb

    case: dict[str, Any] = {
        "case": f"dynamic fan-out, {args.instance} instance, {args.executor}, S={args.sleep:g}",
        "executor": args.executor,
        "instance": args.instance,
        "n": args.n,
        "sleep": args.sleep,
        "steps": args.n + 2,
        "success": checked["ok"],
        **{k: v for k, v in checked.items() if k != "ok"},
        "wall_seconds": round(wall, 2),
        "ms_per_step": round(1000 * wall / (args.n + 2), 2),
        "peak_rss_mb": round(peak_rss_self_mb(), 1),
        "ru_maxrss_mb": round(maxrss_mb, 1),
        "rss_method": "VmHWM of the run's own process (/proc/self/status), console at WARNING",
        "load_average_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "command": "benchmarks/.venv/bin/python benchmarks/dagster_load.py "
        + " ".join(sys.argv[1:]),
        "finished": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "git": git_info(str(HERE.parent)),
        "dagloop_source": _dagloop_source(),
    }
    if traced is not None:
        case["tracemalloc"] = traced
    _save(args.json, case)
    print(json.dumps(case, indent=2))
    return 0 if checked["ok"] else 1


class _Tracer:
    """tracemalloc, with the snapshot of the highest traced total (sampled every 15 s)."""

    def __init__(self, top: int) -> None:
        self._top = top
        self._best: tuple[int, Any] | None = None
        self._stop = threading.Event()
        tracemalloc.start(1)
        self._thread = threading.Thread(target=self._sample_every, args=(15.0,), daemon=True)
        self._thread.start()

    def _sample(self) -> None:
        current, _ = tracemalloc.get_traced_memory()
        if self._best is None or current > self._best[0]:
            self._best = (current, tracemalloc.take_snapshot())

    def _sample_every(self, seconds: float) -> None:
        while not self._stop.wait(seconds):
            self._sample()

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join()
        self._sample()
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        assert self._best is not None
        total, snapshot = self._best
        mb = 1024 * 1024
        return {
            "traced_peak_mb": round(peak / mb, 1),
            "snapshot_total_mb": round(total / mb, 1),
            "top_lines": [
                {
                    "where": str(stat.traceback[0]),
                    "mb": round(stat.size / mb, 2),
                    "blocks": stat.count,
                }
                for stat in snapshot.statistics("lineno")[: self._top]
            ],
            "top_files": [
                {"file": str(stat.traceback[0].filename), "mb": round(stat.size / mb, 2)}
                for stat in snapshot.statistics("filename")[: self._top]
            ],
        }


def _dagloop_source() -> str:
    import dagloop

    return str(Path(dagloop.__file__).resolve().parent.parent)


def _save(path: Path, case: dict[str, Any]) -> None:
    cases: list[dict[str, Any]] = []
    if path.exists():
        old = json.loads(path.read_text())
        cases = old.get("cases", []) if isinstance(old, dict) and "cases" in old else [old]
    key = (case["executor"], case["instance"], case["n"], case["sleep"], "tracemalloc" in case)

    def key_of(c: dict[str, Any]) -> tuple[Any, ...]:
        return (
            c.get("executor", "dagloop"),
            c.get("instance", "ephemeral"),
            c.get("n"),
            c.get("sleep", 0.0),
            "tracemalloc" in c,
        )

    cases = [c for c in cases if key_of(c) != key] + [case]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"cases": cases}, indent=2) + "\n")


if __name__ == "__main__":
    raise SystemExit(main())
