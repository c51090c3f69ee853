"""Where one step's cost goes: a cost model per executor, on one fan-out.

    benchmarks/.venv/bin/python benchmarks/cost_model.py                 # N=1000, S=0, ephemeral
    benchmarks/.venv/bin/python benchmarks/cost_model.py --instance sqlite --n 1000
    benchmarks/.venv/bin/python benchmarks/cost_model.py --executors dagloop --repeats 1

Every run is a fresh process (`harness/cost_case.py`); the executors alternate within each
round (order reversed every other round) and the table shows medians. Two kinds of runs:

* *clocks* runs (`--repeats`, default 3), untraced: the run's wall; the main thread's
  CPU (it runs the event loop under dagloop, everything under in_process), its time idle
  in the loop's selector, its time in the run queue (cores busy with other processes:
  machine load), and the rest of its wall, off the CPU for another reason: waiting for
  the GIL held by another thread of the process, or blocked in a system call outside the
  selector; CPU of every other thread (the event-log writer, worker threads); garbage
  collection timed by `gc.callbacks`.
* one *profile* run, sampled from outside by py-spy (only the thread holding the GIL):
  the share of each category among the main thread's samples (Dagster's step code,
  dagloop's orchestration, Dagster's ActiveExecution, Dagster's logging, storing
  entries; see `harness/cost_case.py`) is applied to the clocks runs' main-thread CPU
  less its GC time.

Prints one table (ms per step) and writes `results/cost_model.json` (one entry per
instance, N and S; a run replaces its own entry).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
from typing import Any

from harness import meta
from harness.cost_case import CATEGORIES
from harness.proc import BENCH_DIR, run_case


def _median(values: list[float]) -> float:
    return statistics.median(values) if values else 0.0


def measure(args: argparse.Namespace) -> dict[str, Any]:
    runs: dict[str, list[dict[str, Any]]] = {ex: [] for ex in args.executors}
    sources = dict(args.sources)
    base = {"instance": args.instance, "n": args.n, "sleep": args.sleep}
    if args.console:
        base["console_level"] = args.console
    timeout = 300 + args.n * 0.2
    for rnd in range(args.repeats):
        order = args.executors if rnd % 2 == 0 else args.executors[::-1]
        for ex in order:
            spec = {**base, "executor": ex.split("@")[0], "pass": "clocks"}
            res = run_case("harness.cost_case", spec, timeout, sources.get(ex))
            print(f"  clocks {ex:12} round {rnd}: wall {res.get('wall')} s  ok={res.get('ok')}")
            if not res.get("ok"):
                print(f"    {res.get('error')}", file=sys.stderr)
            runs[ex].append(res)
    profiles: dict[str, dict[str, Any]] = {}
    for ex in args.executors:
        label = ex.replace("@", "-")
        path = os.path.join(BENCH_DIR, "profiles", f"cost-{label}-{args.instance}-N{args.n}.txt")
        os.makedirs(os.path.dirname(path), exist_ok=True)
        spec = {**base, "executor": ex.split("@")[0], "pass": "profile", "samples_path": path}
        profiles[ex] = run_case("harness.cost_case", spec, timeout * 4, sources.get(ex))
        print(f"  profile {ex:11}: wall {profiles[ex].get('wall')} s (sampled)")
    return {ex: model(runs[ex], profiles[ex], args.n + 2) for ex in args.executors}


def model(runs: list[dict[str, Any]], profile: dict[str, Any], steps: int) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")]
    if not ok:
        return {"ok": False, "error": runs[-1].get("error") if runs else "no run"}
    ms = 1000.0 / steps

    def med(key: str) -> float:
        return _median([float(r.get(key) or 0.0) for r in ok])

    def med_nested(key: str, sub: str) -> float:
        return _median([float((r.get(key) or {}).get(sub, 0.0)) for r in ok])

    main_gc = med_nested("gc_seconds", "main")
    main_cpu = med("main_cpu")
    samples = (profile.get("samples") or {}).get("main") or {}
    total = sum(samples.values())
    split = {name: (samples.get(name, 0) / total if total else 0.0) for name in CATEGORIES}
    own = max(main_cpu - main_gc, 0.0)
    threads = sorted({k for r in ok for k in (r.get("thread_cpu") or {})})
    rows: list[tuple[str, float]] = [(name, own * share) for name, share in split.items()]
    rows.append(("garbage collection (main thread)", main_gc))
    rows.append(("main thread idle in the loop's selector", med("main_selector")))
    rows.append(("main thread waiting for the GIL (or a system call)", med("main_off_cpu_other")))
    rows.append(("main thread waiting for a core (machine load)", med("main_run_queue")))
    other_cpu = {t: med_nested("thread_cpu", t) for t in threads}
    return {
        "ok": True,
        "runs": len(ok),
        "wall": med("wall"),
        "walls": [r["wall"] for r in ok],
        "ms_per_step": round(med("wall") * ms, 3),
        "main_cpu_ms_per_step": round(main_cpu * ms, 3),
        "rows_ms_per_step": {name: round(v * ms, 3) for name, v in rows},
        "other_threads_cpu_ms_per_step": {t: round(v * ms, 3) for t, v in other_cpu.items()},
        "gc_other_threads_ms_per_step": round(med_nested("gc_seconds", "other threads") * ms, 3),
        "gc_by_generation": ok[len(ok) // 2].get("gc_by_generation"),
        "profile_shares": {k: round(v, 3) for k, v in split.items()},
        "samples_main_thread": samples,
        "samples_gil_holders": (profile.get("samples") or {}).get("holders"),
        "profile_wall": profile.get("wall"),
        "loadavg_1min": [r.get("loadavg_1min") for r in ok],
        "peak_rss_self_mb": max(r.get("peak_rss_self_mb", 0.0) for r in ok),
    }


def print_table(result: dict[str, Any]) -> None:
    models = result["executors"]
    names = list(models)
    print(
        f"\nms per step, {result['instance']}, N={result['n']}, S={result['sleep']:g} "
        f"(median of {result['repeats']}; commit {result['git']['commit']}"
        f"{' dirty' if result['git'].get('dirty') else ''})"
    )
    print(f"{'':56}" + "".join(f"{n:>14}" for n in names))
    print(
        f"{'wall per step':56}" + "".join(f"{models[n].get('ms_per_step', 0):14.3f}" for n in names)
    )
    rows = list(next(iter(m for m in models.values() if m.get("ok")))["rows_ms_per_step"])
    for row in rows:
        cells = "".join(f"{models[n].get('rows_ms_per_step', {}).get(row, 0):14.3f}" for n in names)
        print(f"  {row:54}{cells}")
    threads = sorted(
        {t for m in models.values() for t in m.get("other_threads_cpu_ms_per_step", {})}
    )
    for t in threads:
        cells = "".join(
            f"{models[n].get('other_threads_cpu_ms_per_step', {}).get(t, 0):14.3f}" for n in names
        )
        print(f"  {'CPU of thread ' + t:54}{cells}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument(
        "--executors",
        default="dagloop,in_process",
        help="comma-separated; 'dagloop@NAME' runs dagloop from the source tree given by "
        "--source NAME=DIR (e.g. a snapshot of another commit's src/) to compare versions",
    )
    ap.add_argument("--source", action="append", default=[], metavar="NAME=DIR")
    ap.add_argument("--instance", default="ephemeral", choices=["ephemeral", "sqlite"])
    ap.add_argument("--n", type=int, default=1000)
    ap.add_argument("--sleep", type=float, default=0.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--console", default=None, help="Dagster's console log level (default DEBUG)")
    ap.add_argument("--json", default=os.path.join(BENCH_DIR, "results", "cost_model.json"))
    args = ap.parse_args()
    args.executors = [e.strip() for e in args.executors.split(",") if e.strip()]
    named = dict(item.split("=", 1) for item in args.source)
    args.sources = [(ex, named[ex.split("@", 1)[1]]) for ex in args.executors if "@" in ex]
    git = meta.git_info(os.path.dirname(BENCH_DIR))
    result = {
        "instance": args.instance,
        "n": args.n,
        "sleep": args.sleep,
        "repeats": args.repeats,
        "console_level": args.console or "DEBUG",
        "git": git,
        "command": "benchmarks/.venv/bin/python benchmarks/cost_model.py " + " ".join(sys.argv[1:]),
        "machine": meta.machine(),
        "executors": measure(args),
    }
    result["machine"]["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print_table(result)
    cases: list[dict[str, Any]] = []
    if os.path.exists(args.json):
        with open(args.json) as f:
            cases = json.load(f).get("cases", [])
    key = (args.instance, args.n, args.sleep)
    cases = [c for c in cases if (c["instance"], c["n"], c["sleep"]) != key] + [result]
    with open(args.json, "w") as f:
        json.dump({"cases": cases}, f, indent=2)
        f.write("\n")
    print(f"wrote {os.path.relpath(args.json)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
