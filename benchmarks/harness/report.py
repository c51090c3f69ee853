"""Rendering: rich tables on the terminal, results/<suite>.json, results/summary.md and
results/bench.png (built from every results/*.json present, so suites run separately
still end up in one summary)."""

from __future__ import annotations

import json
import os
from typing import Any

from rich.console import Console
from rich.table import Table

from harness.engines import ENGINES
from harness.executors import EXECUTORS
from harness.suite_assets import rows_assets
from harness.suite_cost import rows_cost
from harness.suite_scale import rows_scale
from harness.suite_scaleout import rows_scaleout
from harness.suite_storage import rows_storage
from harness.suite_streaming import rows_streaming
from harness.suite_termination import rows_termination

SUITE_ORDER = [
    "scale",
    "cost",
    "fanout",
    "hosting",
    "engine",
    "dask",
    "dask_cpu",
    "scaleout",
    "storage",
    "termination",
    "streaming",
    "assets",
]
INST_LABEL = {"ephemeral": "ephemeral", "sqlite": "SQLite", "postgres": "PostgreSQL"}


def fmt_case(c: dict[str, Any] | None, with_lb: bool = True, with_rss: bool = True) -> str:
    if c is None:
        return "-"
    if not c.get("ok"):
        return str(c.get("status", "failed"))
    s = f"{c['wall']:.2f} s"
    extra = []
    if with_lb and c.get("ratio_lower_bound") is not None:
        extra.append(f"x{c['ratio_lower_bound']:.2f} LB")
    if c.get("runs", 1) > 1:
        extra.append(f"median of {len(c['walls'])}")
    if with_rss and c.get("peak_rss_tree_mb"):
        extra.append(f"{c['peak_rss_tree_mb']:.0f} MB")
    return s + (f" ({', '.join(extra)})" if extra else "")


def _rows_fanout(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One table per instance: (title, header, rows)."""
    out = []
    execs = [e for e in res["executors"] if any(c["executor"] == e for c in res["cases"])]
    for inst in res["params"]["instances"]:
        cases = [c for c in res["cases"] if c["instance"] == inst]
        if not cases:
            continue
        fit = res.get("c0", {}).get(inst)
        c0s = f"c0 = {fit['c0'] * 1000:.1f} ms/step" if fit else "c0 not measured"
        header = ["S", "N", "lower bound", *[res["executors"][e] for e in execs]]
        if "dagloop" in execs and "dagster_async_executor" in execs:
            header.append("dagloop / d-a-e")
        rows = []
        keys = sorted({(c["sleep"], c["n"]) for c in cases}, key=lambda k: (-k[0], k[1]))
        for sleep, n in keys:
            row_cases = {c["executor"]: c for c in cases if (c["sleep"], c["n"]) == (sleep, n)}
            lb = next(
                (
                    c.get("lower_bound")
                    for c in row_cases.values()
                    if c.get("lower_bound") is not None
                ),
                None,
            )
            row = [f"{sleep:g}", str(n), f"{lb:.2f} s" if lb is not None else "-"]
            row += [fmt_case(row_cases.get(e)) for e in execs]
            if len(header) > len(row):
                r = row_cases.get("dagloop", {}).get("ratio_dagster_async_executor")
                row.append(f"{r:.2f}" if r is not None else "-")
            rows.append(row)
        out.append((f"{res['suite']}: {INST_LABEL.get(inst, inst)} instance ({c0s})", header, rows))
    return out


def _rows_hosting(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    header = ["instance", "S", "N", "greenlet", "thread", "thread / greenlet", "faster"]
    rows = []
    for cmp in res.get("comparisons", []):
        rows.append(
            [
                INST_LABEL.get(cmp["instance"], cmp["instance"]),
                f"{cmp['sleep']:g}",
                str(cmp["n"]),
                f"{cmp['greenlet']:.2f} s ({cmp['greenlet_rss']:.0f} MB)",
                f"{cmp['thread']:.2f} s ({cmp['thread_rss']:.0f} MB)",
                f"{cmp['thread_over_greenlet']:.2f}",
                cmp["faster"],
            ]
        )
    failed = [c for c in res["cases"] if not c.get("ok")]
    for c in failed:
        rows.append(
            [
                INST_LABEL.get(c["instance"], c["instance"]),
                f"{c['sleep']:g}",
                str(c["n"]),
                c["executor"],
                c.get("status", ""),
                str(c.get("error", ""))[:60],
                "",
            ]
        )
    return [("hosting: step_host=greenlet vs thread (dagloop executor)", header, rows)]


def _rows_engine(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    header = [
        "workload",
        "engine",
        "wall (median)",
        "overhead/node",
        "x baseline (overhead)",
        "x baseline (wall)",
        "build",
        "peak RSS",
    ]
    rows = []
    for wl, _size in res["params"]["workloads"]:
        for c in (c for c in res["cases"] if c["workload"] == wl):
            label = ENGINES[c["engine"]].label if c["engine"] in ENGINES else c["engine"]
            if not c.get("ok"):
                rows.append(
                    [
                        wl,
                        label,
                        c.get("status", "failed"),
                        str(c.get("error", ""))[:50],
                        "",
                        "",
                        "",
                        "",
                    ]
                )
                continue
            ro, rw = c.get("ratio_overhead_baseline"), c.get("ratio_wall_baseline")
            wall = f"{c['wall'] * 1000:.1f} ms" if c["wall"] < 10 else f"{c['wall']:.2f} s"
            if c["critical_path"]:
                wall += f" (cp {c['critical_path']:.2f} s)"
            rows.append(
                [
                    wl,
                    label,
                    wall,
                    f"{c['overhead_us_per_node']:.2f} µs",
                    f"{ro:.2f}" if ro is not None else "-",
                    f"{rw:.2f}" if rw is not None else "-",
                    f"{c['build'] * 1000:.1f} ms",
                    f"{c['peak_rss_mb']:.0f} MB" if c.get("peak_rss_mb") else "-",
                ]
            )
    return [("engine: DAG engines on one event loop", header, rows)]


def _secs(w: float) -> str:
    return f"{w:.1f}" if w >= 10 else f"{w:.2f}"


def fmt_dask_wall(c: dict[str, Any] | None) -> str:
    """'median s (every run)', or 'error: <short reason>' when no run succeeded."""
    if c is None:
        return "-"
    if not c.get("ok"):
        return f"error: {c.get('reason', c.get('status', 'failed'))}"
    s = f"{_secs(c['wall'])} s"
    if c.get("runs", 1) > 1:
        runs = [_secs(r["wall"]) if r.get("ok") else "failed" for r in c["samples"]]
        s += f" ({', '.join(runs)})"
    if c.get("failed_runs"):
        s += f"; {c['failed_runs']} of {c['runs']} runs failed: {c.get('reason', '')}"
    return s


def _rows_dask(res: dict[str, Any]) -> list[tuple[str, list[str], list[list[str]]]]:
    """One row per instance: every mode's wall, the target ratios, every mode's peak RSS."""
    p = res["params"]
    modes = list(res["executors"])
    by = {(c["mode"], c["instance"]): c for c in res["cases"]}
    ratio_cols = list(dict.fromkeys(t["col"] for t in res.get("targets", [])))
    limits = {t["col"]: t["limit"] for t in res.get("targets", [])}
    header = [
        "instance",
        *[f"{m}: {res['executors'][m]}" for m in modes],
        *[f"{col} (≤ {limits[col]:g})" for col in ratio_cols],
        *[f"peak RSS {m}" for m in modes],
    ]
    rows = []
    for inst in p["instances"]:
        prefix = f"{res['suite']}.{inst}."
        cell = {t["col"]: t for t in res.get("targets", []) if t["id"].startswith(prefix)}
        row = [INST_LABEL.get(inst, inst)]
        row += [fmt_dask_wall(by.get((m, inst))) for m in modes]
        row += [_verdict(cell[col]) if col in cell else "-" for col in ratio_cols]
        for m in modes:
            c = by.get((m, inst))
            row.append(f"{c['peak_rss_tree_mb']:.0f} MB" if c and c.get("ok") else "-")
        rows.append(row)
    runs = "/".join(str(r) for r in sorted({c.get("runs", 1) for c in res["cases"]}))
    if p.get("cpu_iterations"):
        per_step = p.get("cpu_seconds_per_step")
        cost = f" (~{per_step * 1000:.0f} ms here)" if per_step else ""
        shape = (
            f"dask_cpu: CPU-BOUND variant, fan-out N={p['n']}, each mapped op a sync op "
            f"burning {p['cpu_iterations']} iterations of pure-Python arithmetic{cost}, "
            "no sleep"
        )
    else:
        shape = f"dask: fan-out N={p['n']}, S={p['sleep']:g} s"
    dask2 = p.get("executor_configs", {}).get("dask2", {}).get("dask", {})
    if "steps_per_worker" in dask2:
        shape += f"; dask2 with steps_per_worker={dask2['steps_per_worker']}"
    title = (
        f"{shape}; median wall of {runs} run(s), "
        "every run in brackets, run order alternated; wall includes starting the Dask "
        "cluster; peak RSS of the whole process tree (Dask scheduler and workers included), "
        "highest of the runs"
    )
    return [(title, header, rows)]


ROWS = {
    "fanout": _rows_fanout,
    "hosting": _rows_hosting,
    "engine": _rows_engine,
    "dask": _rows_dask,
    "dask_cpu": _rows_dask,
    "storage": rows_storage,
    "scale": rows_scale,
    "scaleout": rows_scaleout,
    "cost": rows_cost,
    "termination": rows_termination,
    "streaming": rows_streaming,
    "assets": rows_assets,
}


def _verdict(t: dict[str, Any]) -> str:
    if t["met"] is None:
        return "n/a"
    return f"{t['value']:.3g} {'✓' if t['met'] else '✗'}"


def _target_matrix(res: dict[str, Any]) -> tuple[list[str], list[list[str]], list[str]]:
    """Targets as a matrix: rows (case) by cols (criterion), cells 'value ✓/✗'; plus notes."""
    targets = res.get("targets", [])
    rows: list[str] = []
    cols: list[str] = []
    for t in targets:
        if t["row"] not in rows:
            rows.append(t["row"])
        if t["col"] not in cols:
            cols.append(t["col"])
    cell = {(t["row"], t["col"]): t for t in targets}
    limits = {t["col"]: t["limit"] for t in targets}
    header = ["", *[f"{c} (≤ {limits[c]:g})" for c in cols]]
    body = [[r, *[_verdict(cell[(r, c)]) if (r, c) in cell else "" for c in cols]] for r in rows]
    notes = sorted({t["note"] for t in targets if t.get("note")})
    return header, body, notes


def print_suite(res: dict[str, Any], console: Console | None = None) -> None:
    console = console or Console(width=200)
    for title, header, rows in ROWS[res["suite"]](res):
        table = Table(title=title, title_justify="left")
        for h in header:
            table.add_column(h, overflow="fold")
        for r in rows:
            table.add_row(*r)
        console.print(table)
    if res.get("targets"):
        header, body, notes = _target_matrix(res)
        table = Table(
            title=f"{res['suite']}: targets (✓ met, ✗ missed)",
            title_justify="left",
        )
        for h in header:
            table.add_column(h, overflow="fold")
        for r in body:
            table.add_row(
                *[x.replace("✗", "[red]✗[/red]").replace("✓", "[green]✓[/green]") for x in r]
            )
        console.print(table)
        for n in notes:
            console.print(f"  note: {n}", highlight=False)


def write_json(res: dict[str, Any], results_dir: str) -> str:
    os.makedirs(results_dir, exist_ok=True)
    path = os.path.join(results_dir, f"{res['suite']}.json")
    with open(path + ".tmp", "w") as f:
        json.dump(res, f, indent=1, default=str)
    os.replace(path + ".tmp", path)
    return path


def load_all(results_dir: str) -> list[dict[str, Any]]:
    out = []
    for s in SUITE_ORDER:
        p = os.path.join(results_dir, f"{s}.json")
        if os.path.exists(p):
            with open(p) as f:
                res = json.load(f)
            # A script's own output (e.g. termination.py run alone) is not a suite result.
            if res.get("suite") == s and "git" in res:
                out.append(res)
    return out


# --------------------------------------------------------------------------- markdown


def _md_table(header: list[str], rows: list[list[str]]) -> str:
    esc = lambda s: str(s).replace("|", "\\|")  # noqa: E731
    lines = ["| " + " | ".join(esc(h) for h in header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(esc(x) for x in r) + " |" for r in rows]
    return "\n".join(lines)


def _md_targets(res: dict[str, Any]) -> list[str]:
    """The verdict matrix of one suite's targets."""
    targets = res["targets"]
    met = sum(1 for t in targets if t["met"] is True)
    missed = sum(1 for t in targets if t["met"] is False)
    na = sum(1 for t in targets if t["met"] is None)
    title = f"## Targets of the {res['suite']} suite: {met} met, {missed} missed, {na} not measured"
    header, body, notes = _target_matrix(res)
    header[0] = res["suite"]
    parts = [title, "", _md_table(header, body), ""]
    parts += [f"- note: {n}" for n in notes]
    parts.append("")
    return parts


def write_summary(results: list[dict[str, Any]], results_dir: str) -> str:
    parts = ["# dagloop benchmark results", ""]
    if results:
        r0 = results[0]
        m = r0["machine"]
        parts += [
            f"Machine: {m['cpu']}, {m['cores']} cores, {m['mem_gib']} GiB, "
            f"{m['platform']}, Python {m['python']}.",
            "Versions: " + ", ".join(f"{k} {v}" for k, v in r0["versions"].items() if v) + ".",
            "",
            "Commands that produced these files (run from the repository root):",
            "",
        ]
        commits = sorted({r["git"]["commit"] for r in results})
        if len(commits) > 1:
            parts += [
                f"**These tables come from {len(commits)} commits ({', '.join(commits)}):** "
                "run `make bench` to regenerate every one of them from one commit.",
                "",
            ]
        for r in results:
            git = r["git"]
            dirty = git.get("dirty", git.get("dirty_src"))
            src = f"dagloop commit {git['commit']}" + (
                " + uncommitted changes" if dirty else " (clean tree)"
            )
            parts.append(
                f"- `{r['suite']}`: `{r['command']}` ({r['mode']} mode, {r['started']}, "
                f"{r['duration_s'] / 60:.1f} min, {src})"
            )
            m = r.get("merged_with")
            if m and "cases_kept" in m:
                parts.append(
                    f"  (only the headline cases re-run; every other case and c0 kept from an "
                    f"earlier run: `{m['command']}`, {m['started']}, dagloop commit "
                    f"{(m.get('git') or {}).get('commit', '?')}; the minutes above are the sum)"
                )
                m = m.get("merged_with")
            if m:
                parts.append(
                    f"  (instances {', '.join(m['instances_kept'])} kept from an earlier run: "
                    f"`{m['command']}`, {m['started']}; the minutes above are the sum)"
                )
        parts += [
            "",
            "Timings drift on shared machines; the ratios (measured in the same run, on the same "
            "machine) are what to compare. Each Dagster case runs in a fresh process; wall is "
            "`dg.execute_job` only (imports and instance creation excluded); peak RSS is the "
            "whole process tree. Lower bound (LB) = max(S, N * c0), c0 = slope of the "
            "in-process executor's wall over N at S = 0 on the same instance.",
            "",
            "Machine load while the suites ran (1-min load average at start / end, "
            f"{r0['machine']['cores']} cores): "
            + "; ".join(
                f"{r['suite']} {r['machine'].get('loadavg_start', ['?'])[0]} / "
                f"{r['machine'].get('loadavg_end', ['?'])[0]}"
                for r in results
            )
            + ". A load above the core count means other processes competed for the CPU.",
            "",
            "![benchmark plot](bench.png)",
            "",
        ]
    for r in results:
        if r.get("targets"):
            parts += _md_targets(r)
    for r in results:
        for title, header, rows in ROWS[r["suite"]](r):
            parts += [f"## {title}", "", _md_table(header, rows), ""]
    path = os.path.join(results_dir, "summary.md")
    with open(path, "w") as f:
        f.write("\n".join(parts))
    return path


# --------------------------------------------------------------------------- plot

COLORS = {
    "dagloop": "tab:green",
    "dagloop_greenlet": "tab:green",
    "dagloop_thread": "tab:olive",
    "dagster_async_executor": "tab:orange",
    "in_process": "tab:blue",
    "multiprocess": "tab:purple",
    "taskgroup": "tab:gray",
    "dagloop_build_dag": "tab:olive",
    "async_dag": "tab:orange",
    "dagron": "tab:red",
}


def write_plot(results: list[dict[str, Any]], results_dir: str) -> str | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by = {r["suite"]: r for r in results}
    fig, axes = plt.subplots(2, 3, figsize=(17, 9.5))
    dag = by.get("fanout")
    insts = dag["params"]["instances"] if dag else []
    for i, inst in enumerate(["ephemeral", "sqlite", "postgres"]):
        ax = axes[0][i]
        ax.set_title(f"Dagster fan-out, S = 3 s, {INST_LABEL[inst]} instance", fontsize=10)
        if not dag or inst not in insts:
            ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
            ax.set_axis_off()
            continue
        cases = [c for c in dag["cases"] if c["instance"] == inst and c["sleep"] == 3.0]
        for ex, label in dag["executors"].items():
            pts = sorted((c["n"], c["wall"]) for c in cases if c["executor"] == ex and c.get("ok"))
            if pts:
                ax.plot(*zip(*pts, strict=True), marker="o", label=label, color=COLORS.get(ex))
        lb = sorted({(c["n"], c["lower_bound"]) for c in cases if c.get("lower_bound") is not None})
        if lb:
            ax.plot(
                *zip(*lb, strict=True),
                ls="--",
                color="black",
                lw=1,
                label="lower bound max(S, N·c0)",
            )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("N mapped steps")
        ax.set_ylabel("wall seconds")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    # per-step cost at S = 0
    ax = axes[1][0]
    ax.set_title("Dagster, S = 0: wall per step at the largest N run", fontsize=10)
    if dag:
        execs = list(dag["executors"])
        width = 0.8 / max(1, len(execs))
        for j, ex in enumerate(execs):
            xs, ys = [], []
            for i, inst in enumerate(insts):
                cs = [
                    c
                    for c in dag["cases"]
                    if c["instance"] == inst
                    and c["sleep"] == 0
                    and c["executor"] == ex
                    and c.get("ok")
                ]
                if cs:
                    c = max(cs, key=lambda c: c["n"])
                    xs.append(i + j * width)
                    ys.append(c["wall"] / c["n"] * 1000)
            if xs:
                ax.bar(xs, ys, width, label=dag["executors"][ex], color=COLORS.get(ex))
        ax.set_xticks(
            [i + 0.4 - width / 2 for i in range(len(insts))], [INST_LABEL[i] for i in insts]
        )
        ax.set_ylabel("ms per step (log)")
        ax.set_yscale("log")
        ax.legend(fontsize=7)
    # hosting
    ax = axes[1][1]
    ax.set_title("dagloop step hosting: wall, thread / greenlet", fontsize=10)
    host = by.get("hosting")
    if host and host.get("comparisons"):
        cmps = host["comparisons"]
        labels = [f"{INST_LABEL[c['instance']]}\nN={c['n']} S={c['sleep']:g}" for c in cmps]
        vals = [c["thread_over_greenlet"] for c in cmps]
        ax.bar(range(len(vals)), vals, color=["tab:olive" if v < 1 else "tab:green" for v in vals])
        ax.axhline(1.0, color="black", lw=1)
        ax.set_xticks(range(len(vals)), labels, fontsize=7)
        ax.set_ylabel("thread wall / greenlet wall (< 1: thread faster)")
    else:
        ax.text(0.5, 0.5, "not run", ha="center", va="center", transform=ax.transAxes)
    # engine
    ax = axes[1][2]
    ax.set_title("Engine: overhead per node (median), log scale", fontsize=10)
    eng = by.get("engine")
    if eng:
        wls = [w for w, _ in eng["params"]["workloads"]]
        engines = list(eng["engines"])
        width = 0.8 / max(1, len(engines))
        for j, e in enumerate(engines):
            xs, ys = [], []
            for i, wl in enumerate(wls):
                c = next(
                    (
                        c
                        for c in eng["cases"]
                        if c["engine"] == e and c["workload"] == wl and c.get("ok")
                    ),
                    None,
                )
                if c:
                    xs.append(i + j * width)
                    ys.append(max(c["overhead_us_per_node"], 0.01))
            if xs:
                ax.bar(xs, ys, width, label=eng["engines"][e], color=COLORS.get(e))
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(wls))], wls, fontsize=8)
        ax.set_yscale("log")
        ax.set_ylabel("µs per node (wall - critical path) / nodes")
        ax.legend(fontsize=7)
    cmd = "; ".join(sorted({r["command"] for r in results}))
    fig.suptitle(f"dagloop benchmarks — {cmd}", fontsize=11)
    fig.tight_layout()
    path = os.path.join(results_dir, "bench.png")
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


_ = EXECUTORS  # re-exported for callers that label executors
