"""`make demo`: the quickstart fan-out on a persistent instance, with a short summary.

Runs `examples/quickstart.py::fanout_job` (an async producer, 300 mapped async ops that
each sleep 3 s, one collector) through dagloop's async executor on the SQLite
instance in `$DAGSTER_HOME` (`.dagster_home/` under `make demo`).
"""

import os
import sys
import time
from pathlib import Path

import dagster as dg

sys.path.insert(0, str(Path(__file__).resolve().parent))

from quickstart import NUM_FANOUTS, SLEEP_SECONDS, fanout_job


def main() -> int:
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists():
        config.write_text("telemetry:\n  enabled: false\n")

    with dg.DagsterInstance.get() as instance:
        started = time.perf_counter()
        # Keep the console to the summary; every event is still in the instance's event log.
        quiet = {"loggers": {"console": {"config": {"log_level": "WARNING"}}}}
        job = dg.reconstructable(fanout_job)
        with dg.execute_job(job, instance=instance, run_config=quiet) as result:
            wall = time.perf_counter() - started
            collected = result.output_for_node("collect_results") if result.success else None
            steps = sum(
                1 for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_SUCCESS
            )
    serial = NUM_FANOUTS * SLEEP_SECONDS
    print()
    print("dagloop demo: quickstart fan-out with the async executor")
    print(f"  instance      : {home} (persistent SQLite)")
    print(f"  run           : {result.run_id} ({'SUCCESS' if result.success else 'FAILURE'})")
    print(f"  steps         : {steps} succeeded ({NUM_FANOUTS} mapped ops of {SLEEP_SECONDS:g} s)")
    print(f"  wall time     : {wall:.1f} s (one after another: {serial:.0f} s)")
    print(f"  result        : collected {collected} results")
    return 0 if result.success else 1


if __name__ == "__main__":
    raise SystemExit(main())
