"""Run a benchmark script that is also runnable alone (it writes its own results file)
from a suite, so that `make bench` regenerates its table from the same commit as every
other one."""

from __future__ import annotations

import os
import subprocess
import sys

from harness.context import Ctx
from harness.proc import BENCH_DIR

RESULTS = os.path.join(BENCH_DIR, "results")


def run_script(ctx: Ctx, args: list[str], timeout: float) -> str | None:
    """Run a benchmark script with this interpreter; None, or why it failed."""
    ctx.log(f"  {' '.join(args)}")
    try:
        done = subprocess.run(
            [sys.executable, *args],
            cwd=BENCH_DIR,
            timeout=timeout,
            capture_output=True,
            text=True,
            check=False,
        )
    except subprocess.TimeoutExpired:
        return f"timeout after {timeout:.0f} s"
    if done.returncode != 0:
        return f"exit {done.returncode}: {(done.stderr.strip().splitlines() or [''])[-1]}"[:300]
    return None
