"""The engine suite: dagloop's DAG engine against a TaskGroup baseline, async-dag and
dagron."""

from __future__ import annotations

from typing import Any

from harness.context import Ctx
from harness.engines import BASELINE, ENGINES
from harness.proc import run_case
from harness.targets import target

WORKLOADS = [
    ("independent", 10_000),
    ("chain", 10_000),
    ("layered", 10_000),
    ("diamond", 0),
    ("sleep", 1_000),
]


def _status(err: str) -> str:
    if any(x in err for x in ("AttributeError", "ImportError", "ModuleNotFound")):
        return "not available"
    return "timeout" if "timeout" in err.lower() else "failed"


def engine_suite(ctx: Ctx) -> dict[str, Any]:
    import statistics

    # rounds per workload: every engine runs once per round, in one process (see
    # engine_case.timing); peak RSS comes from a separate fresh process per engine.
    rounds = {"sleep": 3, "diamond": 5} if ctx.quick else {"sleep": 7, "diamond": 11}
    default_rounds = 10 if ctx.quick else 40
    engines = list(ENGINES)
    cases: list[dict[str, Any]] = []
    for wl, size in WORKLOADS:
        ctx.log(f"[engine] {wl}")
        nr = rounds.get(wl, default_rounds)
        timing = run_case(
            "harness.engine_case",
            {"mode": "timing", "workload": wl, "size": size, "engines": engines, "rounds": nr},
            timeout=120 + nr * len(engines) * 3,
        )
        per = timing.get("engines", {})
        base_walls = per.get(BASELINE, {}).get("walls", [])
        for eng in engines:
            case: dict[str, Any] = {"engine": eng, "workload": wl, "size": size}
            r = per.get(eng) or {"ok": False, "error": timing.get("error", "no result")}
            if r.get("ok") and r.get("walls"):
                walls = r["walls"]
                cp, n = timing["critical_path"], timing["nodes"]
                wall = statistics.median(walls)
                case.update(
                    ok=True,
                    status="ok",
                    nodes=n,
                    edges=timing["edges"],
                    critical_path=cp,
                    rounds=len(walls),
                    walls=[round(w, 6) for w in walls],
                    wall=wall,
                    wall_min=min(walls),
                    build=r["build"],
                    overhead_us_per_node=(wall - cp) / n * 1e6,
                )
                if base_walls and len(base_walls) == len(walls):
                    # ratios within each round, then the median over rounds
                    pairs = list(zip(walls, base_walls, strict=True))
                    case["ratio_wall_baseline"] = statistics.median(w / b for w, b in pairs)
                    if all(b - cp > 0 for _, b in pairs):
                        case["ratio_overhead_baseline"] = statistics.median(
                            (w - cp) / (b - cp) for w, b in pairs
                        )
                if ctx.quick and eng not in (BASELINE, "dagloop"):
                    mem = {}  # quick mode: peak RSS only for the headline engine and the baseline
                else:
                    mem = run_case(
                        "harness.engine_case",
                        {"mode": "rss", "engine": eng, "workload": wl, "size": size},
                        timeout=120,
                    )
                case["peak_rss_mb"] = mem.get("peak_rss_mb")
                case["rss_before_build_mb"] = mem.get("rss_before_build_mb")
                ctx.log(
                    f"  {eng:18} {wall * 1000:9.2f} ms  "
                    f"{case['overhead_us_per_node']:9.2f} us/node  {case['peak_rss_mb']} MB"
                )
            else:
                err = str(r.get("error", ""))
                case.update(ok=False, status=_status(err), error=err)
                ctx.log(f"  {eng:18} {case['status']}: {err[:150]}")
            cases.append(case)
    # ratios to the other engines, also per round then median
    for c in cases:
        for other in ("async_dag", "dagron"):
            o = next(
                (x for x in cases if x["engine"] == other and x["workload"] == c["workload"]), None
            )
            if c.get("ok") and o and o.get("ok") and len(o["walls"]) == len(c["walls"]):
                # overhead (wall - critical path) ratio: on the sleep-bound workloads the
                # walls are all ~the critical path; what differs is the engines' own cost
                cp = c["critical_path"]
                pairs = list(zip(c["walls"], o["walls"], strict=True))
                c[f"ratio_wall_{other}"] = statistics.median(a / b for a, b in pairs)
                if all(b - cp > 0 for _, b in pairs):
                    c[f"ratio_overhead_{other}"] = statistics.median(
                        (a - cp) / (b - cp) for a, b in pairs
                    )
    return {
        "suite": "engine",
        "params": {
            "workloads": WORKLOADS,
            "rounds": rounds,
            "default_rounds": default_rounds,
            "statistic": "median over rounds; ratios taken within each round, then the median",
        },
        "engines": {k: ENGINES[k].label for k in engines},
        "cases": cases,
        "targets": engine_targets(cases),
    }


def engine_targets(cases: list[dict[str, Any]], eng: str = "dagloop") -> list[dict[str, Any]]:
    out = []
    get = {(c["engine"], c["workload"]): c for c in cases}
    label = ENGINES[eng].label
    for wl, size in WORKLOADS:
        c = get.get((eng, wl))
        ok = c is not None and c.get("ok")
        note = "" if ok or c is None else f"{c.get('status')}: {c.get('error', '')}"[:200]
        out.append(
            target(
                f"engine.{wl}.overhead",
                f"{label}, {wl}: overhead/node / TaskGroup baseline's",
                c.get("ratio_overhead_baseline") if ok else None,
                1.5,
                note,
                wl,
                "overhead / baseline",
            )
        )
        for other in ("async_dag", "dagron"):
            v = c.get(f"ratio_overhead_{other}") if ok else None
            out.append(
                target(
                    f"engine.{wl}.vs_{other}",
                    f"{label}, {wl}: overhead / {ENGINES[other].label} overhead",
                    v,
                    1.0,
                    note,
                    wl,
                    f"overhead / {other.replace('_', '-')}'s",
                )
            )
        if size >= 10_000:
            out.append(
                target(
                    f"engine.{wl}.rss",
                    f"{label}, {wl}: peak RSS (MB)",
                    c.get("peak_rss_mb") if ok else None,
                    150.0,
                    note,
                    wl,
                    "peak RSS MB",
                )
            )
        if wl == "diamond":
            out.append(
                target(
                    f"engine.{wl}.critical_path",
                    f"{label}, diamond: wall - critical path (ms)",
                    (c["wall"] - c["critical_path"]) * 1000 if ok else None,
                    10.0,
                    note,
                    wl,
                    "wall - critical path ms",
                )
            )
    return out
