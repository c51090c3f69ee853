"""Issue 5 load case: a 10,000-step dynamic fan-out through dagloop's executor.

An async producer yields N dynamic outputs, N mapped async no-op ops, one collector, on
an ephemeral instance. Reported: success, wall time, steps per second and the process's
peak RSS (ru_maxrss). Runs in a fresh interpreter (this script) so the peak is its own.

    .venv/bin/python benchmarks/dagster_load.py            # N = 10,000 (~3-5 min on 2 cores)
    .venv/bin/python benchmarks/dagster_load.py --n 2000
"""

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--json", type=Path, default=HERE / "results" / "dagster_load.json")
    args = parser.parse_args()

    os.environ["DAGLOOP_FANOUT"] = str(args.n)
    os.environ["DAGLOOP_SLEEP"] = "0"
    sys.path.insert(0, str(HERE.parent / "examples"))
    import dagster as dg
    from quickstart import fanout_job

    quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
    with dg.DagsterInstance.ephemeral() as instance:
        started = time.perf_counter()
        with dg.execute_job(
            dg.reconstructable(fanout_job), instance=instance, run_config=quiet
        ) as result:
            wall = time.perf_counter() - started
            collected = result.output_for_node("collect_results") if result.success else None
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    report = {
        "case": "dynamic fan-out, ephemeral instance, dagloop async_executor",
        "n": args.n,
        "steps": args.n + 2,
        "success": result.success,
        "collected": collected,
        "wall_seconds": round(wall, 2),
        "ms_per_step": round(1000 * wall / (args.n + 2), 2),
        "peak_rss_mb": round(peak_mb, 1),
        "load_average_1m": os.getloadavg()[0],
        "command": f"{Path(sys.executable).name} benchmarks/dagster_load.py --n {args.n}",
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))
    return 0 if result.success and collected == args.n else 1


if __name__ == "__main__":
    raise SystemExit(main())
