"""Child process for the engine suite.

Usage: python -m harness.engine_case '<json spec>'

mode "timing": spec = {workload, size, engines, rounds, profile?}
    Builds every engine's runner for the workload in this one process, runs each once
    untimed, then ``rounds`` rounds in which every engine runs once (order rotated each
    round). Because the engines alternate within seconds of each other, machine drift
    (other processes on a shared box) hits them alike, and the ratio of an engine to the
    baseline is taken within each round before the median over rounds.
mode "rss": spec = {engine, workload, size}
    Builds and runs one engine once in a fresh process; reports its RSS high-water mark.
"""

from __future__ import annotations

import asyncio
import gc
import importlib
import sys
import time
import traceback
from typing import Any

from harness.proc import child_main, peak_rss_self_mb

# async-dag's TaskManager.sort() recurses once per link of a chain; the default limit of
# 1,000 would fail it on the 10,000-node chain. Raised for every engine alike.
RECURSION_LIMIT = 100_000


def _build(eng_key: str, wl: Any, fns: Any) -> tuple[Any, float]:
    from harness.engines import ENGINES

    eng = ENGINES[eng_key]
    mod, attr = eng.probe.split(":")
    getattr(importlib.import_module(mod), attr)
    t0 = time.perf_counter()
    runner = eng.build(wl, fns)
    return runner, time.perf_counter() - t0


async def _run_checked(runner: Any, n: int, timeout: float) -> float:
    from harness.engines import Counter

    Counter.calls = 0
    t = time.perf_counter()
    await asyncio.wait_for(runner(), timeout)
    wall = time.perf_counter() - t
    if Counter.calls != n:
        raise RuntimeError(f"{Counter.calls} of {n} nodes ran")
    return wall


def timing(spec: dict[str, Any]) -> dict[str, Any]:
    from harness.engines import make_workload, node_fns

    wl = make_workload(spec["workload"], int(spec["size"]))
    fns = node_fns(wl)
    cp = wl.critical_path()
    per_run_timeout = max(30.0, cp * 10)
    out: dict[str, dict[str, Any]] = {}
    runners: dict[str, Any] = {}
    for key in spec["engines"]:
        try:
            runners[key], build_s = _build(key, wl, fns)
            out[key] = {"ok": True, "build": build_s, "walls": []}
        except BaseException as e:
            traceback.print_exc()
            out[key] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}

    async def go() -> None:
        for key in list(runners):  # warm-up
            try:
                await _run_checked(runners[key], wl.n, per_run_timeout)
            except BaseException as e:
                traceback.print_exc()
                out[key] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
                del runners[key]
        gc.collect()
        gc.freeze()  # the graphs of all engines live here: keep them out of GC scans
        keys = list(runners)
        for r in range(int(spec["rounds"])):
            order = keys[r % len(keys) :] + keys[: r % len(keys)] if keys else []
            for key in order:
                if key not in runners:
                    continue
                gc.collect()
                try:
                    out[key]["walls"].append(
                        await _run_checked(runners[key], wl.n, per_run_timeout)
                    )
                except BaseException as e:
                    traceback.print_exc()
                    out[key] = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
                    del runners[key]

    sys.setrecursionlimit(RECURSION_LIMIT)
    prof = None
    if spec.get("profile"):
        import cProfile

        prof = cProfile.Profile()
        prof.enable()
    asyncio.run(go())
    if prof:
        prof.disable()
        prof.dump_stats(spec["profile"])
    return {
        "ok": True,
        "nodes": wl.n,
        "edges": sum(len(p) for p in wl.parents),
        "critical_path": cp,
        "engines": out,
    }


def rss(spec: dict[str, Any]) -> dict[str, Any]:
    from harness.engines import make_workload, node_fns

    sys.setrecursionlimit(RECURSION_LIMIT)
    wl = make_workload(spec["workload"], int(spec["size"]))
    fns = node_fns(wl)
    gc.collect()
    before = peak_rss_self_mb()
    runner, _ = _build(spec["engine"], wl, fns)

    async def go() -> None:
        await _run_checked(runner, wl.n, max(30.0, wl.critical_path() * 10))

    asyncio.run(go())
    return {
        "ok": True,
        "rss_before_build_mb": round(before, 1),
        "peak_rss_mb": round(peak_rss_self_mb(), 1),
    }


if __name__ == "__main__":
    child_main(lambda spec: timing(spec) if spec.get("mode", "timing") == "timing" else rss(spec))
