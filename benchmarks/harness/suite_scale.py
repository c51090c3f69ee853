"""The scale suite: big runs, at a cost per step that does not grow with the run.

Every case is the fan-out job (`jobs/fanout.py`) in a fresh process (`dagster_case.py`);
wall is `execute_job` alone; peak RSS is the run's own process (VmHWM from
/proc/self/status: the run executes in that process; it starts afresh at exec, unlike
ru_maxrss, which carries the parent's over). Ratios alternate the executors within each
round (order reversed every other round) and take the median of the rounds.

* `noop_memory`, `noop_sqlite`: N = 1,000 no-op steps (S = 0), dagloop / in_process,
  ephemeral (in memory) and SQLite; targets <= 0.45 (moonshot <= 0.3) and <= 0.15. On
  SQLite one round only: in_process fsyncs every entry there (20-340 s a run here).
* `compute_logs`: N = 300 on SQLite, S = 3 and S = 0, `compute_logs: per_step` /
  `per_run` (both set explicitly); target <= 1.05. And, reported without a target, the
  same at S = 0 with every mapped step printing a line (each step then opens its own
  capture: files and a LOGS_CAPTURED event).
* `fanout_10k`: N = 10,000 steps sleeping 3 s on SQLite and PostgreSQL (console at
  WARNING, as a big run would be configured): wall and peak RSS; targets <= 60 s and
  <= 300 MB.
  Reported without a target: the SQLite run with `max_concurrent: 1000`.
* `per_step_cost`: no-op fan-outs on SQLite at N = 1,000 (median of the rounds) and
  N = 30,000 (one run; console at WARNING for both): ms per step at 30,000 / at 1,000,
  target <= 1.2; the 30,000-step run's wall and peak RSS are reported too.

* `dask_share`: with `dask: {processes: 2}` on SQLite, N = 300 mapped steps (producer and
  collector on the run's loop), no-op and CPU-bound (`jobs.cpu.burn`): the share of the
  run's CPU spent in the run process (its own `getrusage`, the Dask scheduler included)
  against the worker processes' (`RUSAGE_CHILDREN` once the cluster closed), and the
  speed-up that share allows on 16 and 64 cores (Amdahl: 1 / (s + (1 - s) / cores)).

`--quick`: one round; the SQLite no-op ratio at N = 300; `fanout_10k` on SQLite only;
`per_step_cost` at 10,000 instead of 30,000 (no 30,000-step run); no Dask share.
"""

from __future__ import annotations

import statistics
from typing import Any

from jobs.cpu import CPU_ITERATIONS

from harness.context import Ctx
from harness.dagster_runs import run_dagster_case
from harness.executors import EXECUTORS
from harness.targets import target

QUIET = "WARNING"


def _rounds(ctx: Ctx) -> int:
    return ctx.repeats or (1 if ctx.quick else 3)


def _alternating(
    ctx: Ctx,
    executors: list[str],
    instance: str,
    n: int,
    sleep: float,
    rounds: int,
    job_kwargs: dict[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    runs: dict[str, list[dict[str, Any]]] = {ex: [] for ex in executors}
    for rnd in range(rounds):
        for ex in executors if rnd % 2 == 0 else executors[::-1]:
            case = run_dagster_case(ctx, ex, instance, n, sleep, job_kwargs=job_kwargs)
            runs[ex].append({**case, "round": rnd})
    return runs


def _ratio_case(
    name: str, runs: dict[str, list[dict[str, Any]]], num: str, den: str, **params: Any
) -> dict[str, Any]:
    """Median wall per executor, and the median of the per-round ratios num / den."""
    case: dict[str, Any] = {"case": name, **params, "executors": {}}
    for ex, rs in runs.items():
        ok = [r for r in rs if r.get("ok")]
        case["executors"][ex] = {
            "ok": len(ok) == len(rs),
            "walls": [r.get("wall") for r in rs],
            "wall": statistics.median(r["wall"] for r in ok) if ok else None,
            "peak_rss_self_mb": max((r.get("peak_rss_self_mb", 0.0) for r in ok), default=None),
            "loadavg_1min": [r.get("loadavg_1min") for r in rs],
            "errors": [r.get("error") for r in rs if not r.get("ok")],
        }
    pairs = [
        (a["wall"], b["wall"])
        for a, b in zip(runs[num], runs[den], strict=True)
        if a.get("ok") and b.get("ok")
    ]
    case["ratio"] = round(statistics.median(a / b for a, b in pairs), 3) if pairs else None
    case["ratio_of"] = f"{num} / {den}"
    return case


def _single(
    ctx: Ctx, instance: str, n: int, sleep: float, name: str, executor: str = "dagloop"
) -> dict[str, Any]:
    timeout = 300 + n * 0.05 + sleep
    run = run_dagster_case(ctx, executor, instance, n, sleep, timeout=timeout, console_level=QUIET)
    return {
        "case": name,
        "instance": instance,
        "n": n,
        "sleep": sleep,
        "ok": bool(run.get("ok")),
        "wall": run.get("wall"),
        "ms_per_step": round(1000 * run["wall"] / (n + 2), 3) if run.get("ok") else None,
        "peak_rss_self_mb": run.get("peak_rss_self_mb"),
        "peak_rss_tree_mb": run.get("peak_rss_tree_mb"),
        "loadavg_1min": run.get("loadavg_1min"),
        "error": run.get("error"),
    }


def scale_suite(ctx: Ctx) -> dict[str, Any]:
    rounds = _rounds(ctx)
    cases: list[dict[str, Any]] = []
    ctx.log(f"[scale] no-op steps, dagloop vs in_process, {rounds} round(s)")
    for instance, name in (("ephemeral", "noop_memory"), ("sqlite", "noop_sqlite")):
        # in_process stores (and fsyncs) each entry on SQLite: 20-340 s for these 1,000
        # steps here, depending on the disk's other load. One round: the ratio is far
        # from its target either way, and three would take most of the hour.
        n_rounds = 1 if instance == "sqlite" else rounds
        # Quick mode: 300 steps on SQLite (in_process alone would take minutes).
        n = 300 if ctx.quick and instance == "sqlite" else 1000
        runs = _alternating(ctx, ["dagloop", "in_process"], instance, n, 0.0, n_rounds)
        cases.append(
            _ratio_case(name, runs, "dagloop", "in_process", instance=instance, n=n, sleep=0.0)
        )
    ctx.log("[scale] compute_logs per_step vs per_run")
    modes = ["dagloop_per_step", "dagloop_per_run"]
    for sleep in (3.0, 0.0):
        runs = _alternating(ctx, modes, "sqlite", 300, sleep, rounds)
        cases.append(
            _ratio_case(
                f"compute_logs_S{sleep:g}", runs, *modes, instance="sqlite", n=300, sleep=sleep
            )
        )
    # The same with every step printing a line of its own: each then opens its capture
    # (files and a LOGS_CAPTURED event). Reported, not a target: the fan-out job logs
    # through context.log only.
    runs = _alternating(ctx, modes, "sqlite", 300, 0.0, rounds, {"prints": True})
    cases.append(
        _ratio_case("compute_logs_printing_S0", runs, *modes, instance="sqlite", n=300, sleep=0.0)
    )
    ctx.log("[scale] 10,000 steps x 3 s")
    instances = ["sqlite"] if ctx.quick else ["sqlite", "postgres"]
    for instance in instances:
        if instance == "postgres" and ctx.pg is None:
            cases.append(
                {
                    "case": "fanout_10k",
                    "instance": instance,
                    "ok": False,
                    "error": ctx.pg_error or "no PostgreSQL",
                }
            )
            continue
        cases.append(_single(ctx, instance, 10_000, 3.0, "fanout_10k"))
    if not ctx.quick:
        # Reported, not a target: the same run with at most 1,000 steps in flight
        # (`max_concurrent`), which bounds the memory of the steps in flight.
        cases.append(
            _single(ctx, "sqlite", 10_000, 3.0, "fanout_10k_max1000", executor="dagloop_max1000")
        )
    ctx.log("[scale] cost per step, small and big no-op fan-outs on SQLite")
    big = 10_000 if ctx.quick else 30_000
    small = [_single(ctx, "sqlite", 1000, 0.0, "noop_1k") for _ in range(rounds)]
    ok_small = [c for c in small if c["ok"]]
    large = _single(ctx, "sqlite", big, 0.0, f"noop_{big // 1000}k")
    small_ms = statistics.median(c["ms_per_step"] for c in ok_small) if ok_small else None
    per_step = {
        "case": "per_step_cost",
        "instance": "sqlite",
        "small": {"n": 1000, "runs": small, "ms_per_step": small_ms},
        "large": large,
        "ratio": round(large["ms_per_step"] / small_ms, 3) if large["ok"] and small_ms else None,
        "ratio_of": f"ms per step at N={big} / at N=1000",
    }
    cases.append(per_step)
    if not ctx.quick:
        ctx.log("[scale] share of each step's CPU left in the run process with Dask")
        cases += [_dask_share(ctx, 0), _dask_share(ctx, CPU_ITERATIONS)]
    return {
        "suite": "scale",
        "params": {
            "rounds": rounds,
            "statistic": "ratios: median of per-round ratios, executors alternated; walls: medians",
            "rss": "VmHWM of the run's own process (peak_rss_self_mb)",
            "console": "Dagster's console logger at DEBUG (its default) for the ratio cases, "
            "WARNING for the 10,000- and 30,000-step runs",
            "executor_configs": {
                k: EXECUTORS[k].config for k in ("dagloop_per_step", "dagloop_per_run")
            },
        },
        "cases": cases,
        "targets": scale_targets(cases, big),
    }


def amdahl(share: float, cores: int) -> float:
    """The speed-up `cores` can give when `share` of the work is serial."""
    return 1.0 / (share + (1.0 - share) / cores)


def _dask_share(ctx: Ctx, cpu_iterations: int) -> dict[str, Any]:
    job_kwargs: dict[str, Any] = {"placement_local": True}
    if cpu_iterations:
        job_kwargs["cpu_iterations"] = cpu_iterations
    run = run_dagster_case(
        ctx, "dagloop_dask2", "sqlite", 300, 0.0, job_kwargs=job_kwargs, timeout=600
    )
    case: dict[str, Any] = {
        "case": "dask_share_cpu" if cpu_iterations else "dask_share_noop",
        "instance": "sqlite",
        "n": 300,
        "sleep": 0.0,
        "cpu_iterations": cpu_iterations,
        "ok": bool(run.get("ok")),
        "wall": run.get("wall"),
        "cpu_run_process": run.get("cpu_self"),
        "cpu_workers": run.get("cpu_children"),
        "loadavg_1min": run.get("loadavg_1min"),
        "error": run.get("error"),
    }
    total = (run.get("cpu_self") or 0.0) + (run.get("cpu_children") or 0.0)
    if run.get("ok") and total > 0:
        share = run["cpu_self"] / total
        case["run_process_share"] = round(share, 3)
        case["amdahl"] = {str(k): round(amdahl(share, k), 2) for k in (16, 64)}
        case["amdahl_limit"] = round(1.0 / share, 2)
    return case


def scale_targets(cases: list[dict[str, Any]], big: int) -> list[dict[str, Any]]:
    by = {(c["case"], c.get("instance")): c for c in cases}
    out = []

    def ratio(name: str, instance: str) -> float | None:
        c = by.get((name, instance))
        return None if c is None else c.get("ratio")

    out.append(
        target(
            "scale.noop_memory",
            "1,000 no-op steps in memory: dagloop / in_process",
            ratio("noop_memory", "ephemeral"),
            0.45,
            row="1,000 no-op steps, in memory",
            col="dagloop / in_process",
        )
    )
    out.append(
        target(
            "scale.noop_memory.moonshot",
            "moonshot: same <= 0.3",
            ratio("noop_memory", "ephemeral"),
            0.3,
            row="1,000 no-op steps, in memory",
            col="moonshot",
        )
    )
    out.append(
        target(
            "scale.noop_sqlite",
            "1,000 no-op steps on SQLite: dagloop / in_process",
            ratio("noop_sqlite", "sqlite"),
            0.15,
            row="1,000 no-op steps, SQLite",
            col="dagloop / in_process",
        )
    )
    for instance in ("sqlite", "postgres"):
        c = by.get(("fanout_10k", instance))
        if c is None:
            continue
        row = f"10,000 x 3 s fan-out, {instance}"
        ok = c.get("ok")
        out.append(
            target(
                f"scale.fanout_10k.{instance}.wall",
                f"{row}: wall (s)",
                c.get("wall") if ok else None,
                60.0,
                c.get("error") or "",
                row,
                "wall s",
            )
        )
        out.append(
            target(
                f"scale.fanout_10k.{instance}.rss",
                f"{row}: peak RSS (MB)",
                c.get("peak_rss_self_mb") if ok else None,
                300.0,
                "",
                row,
                "peak RSS MB",
            )
        )
    out.append(
        target(
            "scale.per_step_cost",
            f"SQLite: ms per step at {big:,} / at 1,000",
            ratio("per_step_cost", "sqlite"),
            1.2,
            row="per-step cost, SQLite",
            col=f"{big // 1000}k / 1k",
        )
    )
    for sleep in (3.0, 0.0):
        out.append(
            target(
                f"scale.compute_logs.S{sleep:g}",
                f"compute_logs per_step / per_run, N=300 S={sleep:g} SQLite",
                ratio(f"compute_logs_S{sleep:g}", "sqlite"),
                1.05,
                row=f"compute_logs, N=300 S={sleep:g}",
                col="per_step / per_run",
            )
        )
    return out


def rows_scale(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table: a row per case."""
    rows = []
    for c in res["cases"]:
        name = c["case"]
        if "executors" in c:
            walls = "; ".join(
                f"{ex} {e['wall']:.2f} s" if e.get("wall") is not None else f"{ex} failed"
                for ex, e in c["executors"].items()
            )
            ratio = "-" if c.get("ratio") is None else f"{c['ratio']:.3f}"
            rows.append(
                [
                    name,
                    c.get("instance", ""),
                    f"N={c['n']} S={c['sleep']:g}",
                    walls,
                    f"{c['ratio_of']} = {ratio}",
                ]
            )
        elif name == "per_step_cost":
            large = c["large"]
            small = c["small"]
            rows.append(
                [
                    name,
                    "sqlite",
                    f"N={large['n']} vs 1,000, S=0",
                    f"{large.get('wall') or 0:.1f} s ({large.get('ms_per_step')} ms/step, "
                    f"{large.get('peak_rss_self_mb')} MB) vs {small.get('ms_per_step')} ms/step",
                    f"{c['ratio_of']} = {c.get('ratio')}",
                ]
            )
        elif name.startswith("dask_share"):
            share = c.get("run_process_share")
            detail = (
                f"run process {c['cpu_run_process']:.1f} s CPU, workers {c['cpu_workers']:.1f} s"
                if c.get("ok")
                else f"failed: {str(c.get('error'))[:80]}"
            )
            bound = (
                f"share {share:.2f}: Amdahl x{c['amdahl']['16']} on 16 cores, "
                f"x{c['amdahl']['64']} on 64 (limit x{c['amdahl_limit']})"
                if share
                else "-"
            )
            rows.append([name, "sqlite", "N=300, dask processes=2", detail, bound])
        else:
            detail = (
                f"{c['wall']:.1f} s, {c['ms_per_step']} ms/step, {c['peak_rss_self_mb']} MB"
                if c.get("ok")
                else f"failed: {str(c.get('error'))[:80]}"
            )
            rows.append(
                [
                    name,
                    c.get("instance", ""),
                    f"N={c.get('n')} S={c.get('sleep', 0):g}",
                    detail,
                    "-",
                ]
            )
    load = [
        x
        for c in res["cases"]
        for e in c.get("executors", {}).values()
        for x in e.get("loadavg_1min", [])
        if x is not None
    ]
    spread = f"; 1-min load {min(load):.1f}-{max(load):.1f}" if load else ""
    title = (
        f"scale: medians of {res['params']['rounds']} alternating round(s); "
        f"peak RSS = VmHWM of the run's process{spread}"
    )
    return [(title, ["case", "storage", "shape", "walls", "ratio"], rows)]
