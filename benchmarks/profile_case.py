"""Profile one benchmark case with cProfile and print where the time goes.

    .venv/bin/python profile_case.py fanout --executor dagloop --n 300 --sleep 0
    .venv/bin/python profile_case.py engine --engine dagloop --workload independent

The pstats file is kept in benchmarks/profiles/ (git-ignored) for snakeviz and the like.
"""

from __future__ import annotations

import argparse
import os
import pstats
import sys

from harness.proc import BENCH_DIR, run_case


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("suite", choices=["fanout", "engine"])
    ap.add_argument("--executor", default="dagloop")
    ap.add_argument("--instance", default="ephemeral", choices=["ephemeral", "sqlite"])
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--engine", default="dagloop")
    ap.add_argument("--workload", default="independent")
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--top", type=int, default=25)
    args = ap.parse_args()
    os.makedirs(os.path.join(BENCH_DIR, "profiles"), exist_ok=True)
    if args.suite == "fanout":
        name = f"fanout-{args.executor}-{args.instance}-N{args.n}-S{args.sleep:g}"
        path = os.path.join(BENCH_DIR, "profiles", name + ".pstats")
        spec = {
            "executor": args.executor,
            "instance": args.instance,
            "n": args.n,
            "sleep": args.sleep,
            "profile": path,
        }
        res = run_case("harness.dagster_case", spec, timeout=1800)
    else:
        name = f"engine-{args.engine}-{args.workload}"
        path = os.path.join(BENCH_DIR, "profiles", name + ".pstats")
        spec = {
            "mode": "timing",
            "workload": args.workload,
            "size": args.size,
            "engines": [args.engine],
            "rounds": args.rounds,
            "profile": path,
        }
        res = run_case("harness.engine_case", spec, timeout=1800)
    if not res.get("ok"):
        print(res, file=sys.stderr)
        return 1
    walls = res.get("wall") or {k: v.get("walls") for k, v in res.get("engines", {}).items()}
    print(f"{name}: wall {walls}")
    st = pstats.Stats(path)
    st.sort_stats("tottime").print_stats(args.top)
    st.sort_stats("cumulative").print_stats(args.top)
    print(f"pstats: {os.path.relpath(path)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
