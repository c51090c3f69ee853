"""Issue 12: the cost of per-step stdout/stderr capture on the fan-out job.

    .venv/bin/python benchmarks/step_logs.py [--n 300] [--sleep 3 0] [--rounds 3]

Runs with the project's own virtual environment (no alternatives needed). The job is
the `dagster` suite's fan-out (async producer, N mapped async ops sleeping S seconds
with two `context.log` calls each, collect) with dagloop's `async_executor`, once with
`compute_logs: per_step` (each step's stdout/stderr captured on its own) and once with
`compute_logs: per_run` (one capture for the run: dagloop before issue 12, and still
the default). Every run
is a fresh process on a fresh persistent SQLite instance; wall is `execute_job` alone.
The modes alternate within a round (order reversed every other round); the table shows
the median over rounds. Writes `benchmarks/results/step_logs.json`.
"""

# No `from __future__ import annotations`: Dagster inspects the `context` annotation.
import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio
import dagster as dg

HERE = Path(__file__).resolve().parent
MODES = ("per_run", "per_step")


def make_job(mode: str, n: int, sleep: float) -> Any:
    from dagloop.dagster import async_executor

    @dg.op(out=dg.DynamicOut())
    async def create_dynamic_outputs():  # type: ignore[no-untyped-def]
        for i in range(n):
            yield dg.DynamicOutput(value=f"item_{i}", mapping_key=f"key_{i}")

    @dg.op
    async def process_item(context: dg.OpExecutionContext, item: str) -> str:
        context.log.info(f"[{context.op_handle}] sleeping...")
        if sleep > 0:
            await anyio.sleep(sleep)
        context.log.info(f"[{context.op_handle}] completed")
        return item

    @dg.op
    async def collect_results(results: list[str]) -> int:
        return len(results)

    @dg.job(executor_def=async_executor.configured({"compute_logs": mode}))
    def fanout_job() -> None:
        collect_results(create_dynamic_outputs().map(process_item).collect())

    return fanout_job


def run_case(spec: dict[str, Any]) -> dict[str, Any]:
    """In the child process: one run, timed."""
    from dagster._core.instance.ref import InstanceRef

    with tempfile.TemporaryDirectory() as home:
        Path(home, "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
        with dg.DagsterInstance.from_ref(InstanceRef.from_dir(home)) as instance:
            job = dg.build_reconstructable_job(
                "step_logs",
                "make_job",
                reconstructable_kwargs={
                    "mode": spec["mode"],
                    "n": spec["n"],
                    "sleep": spec["sleep"],
                },
            )
            started = time.perf_counter()
            result = dg.execute_job(job, instance=instance)
            wall = time.perf_counter() - started
            captures = [
                r.dagster_event.logs_captured_data.step_keys
                for r in instance.all_logs(result.run_id, of_type=dg.DagsterEventType.LOGS_CAPTURED)
                if r.dagster_event is not None
            ]
            return {
                "ok": bool(result.success),
                "wall": wall,
                "captures": len(captures),
                "per_step_captures": sum(1 for keys in captures if len(keys) == 1),
            }


def child(spec: dict[str, Any]) -> dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(HERE), env.get("PYTHONPATH")]))
    with tempfile.NamedTemporaryFile("r", suffix=".json") as out:
        proc = subprocess.run(
            [sys.executable, "-m", "step_logs", "--child", json.dumps(spec), out.name],
            cwd=HERE,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            timeout=600,
            check=False,
        )
        text = out.read()
    if proc.returncode != 0 or not text:
        return {"ok": False, "error": f"exit {proc.returncode}"}
    result: dict[str, Any] = json.loads(text)
    return result


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    parser.add_argument("--sleep", type=float, nargs="+", default=[3.0, 0.0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("SPEC", "OUT"))
    parser.add_argument("--output", default=str(HERE / "results" / "step_logs.json"))
    args = parser.parse_args()
    if args.child:
        spec_text, out_path = args.child
        Path(out_path).write_text(json.dumps(run_case(json.loads(spec_text))))
        return

    cases = []
    for sleep in args.sleep:
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            order = MODES if round_ % 2 == 0 else MODES[::-1]
            for mode in order:
                outcome = child({"mode": mode, "n": args.n, "sleep": sleep})
                runs[mode].append(outcome)
                print(f"N={args.n} S={sleep:g} round {round_ + 1} {mode}: {outcome}", flush=True)
        medians = {
            mode: statistics.median(r["wall"] for r in runs[mode] if r.get("ok"))
            if all(r.get("ok") for r in runs[mode])
            else None
            for mode in MODES
        }
        ratio = (
            medians["per_step"] / medians["per_run"]
            if medians["per_step"] is not None and medians["per_run"]
            else None
        )
        cases.append(
            {
                "n": args.n,
                "sleep": sleep,
                "runs": runs,
                "median_wall": medians,
                "per_step_over_per_run": ratio,
                "target": "per_step_over_per_run <= 1.10",
                "verdict": None if ratio is None else ("met" if ratio <= 1.10 else "missed"),
            }
        )
    commit = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True, check=False
    ).stdout.strip()
    report = {
        "suite": "step_logs",
        "command": "python benchmarks/step_logs.py " + " ".join(sys.argv[1:]),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "versions": {"python": platform.python_version(), "dagster": dg.__version__},
        "git_commit": commit,
        "instance": "sqlite (fresh persistent instance per run, LocalComputeLogManager)",
        "cases": cases,
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(report, indent=2) + "\n")
    print("\n| N | S | per_run (median s) | per_step (median s) | per_step / per_run |")
    print("|---|---|---|---|---|")
    for case in cases:
        med = case["median_wall"]
        ratio = case["per_step_over_per_run"]
        print(
            f"| {case['n']} | {case['sleep']:g} | {med['per_run']} | {med['per_step']} | "
            f"{'n/a' if ratio is None else f'{ratio:.3f}'} |"
        )


if __name__ == "__main__":
    main()
