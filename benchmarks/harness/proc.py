"""Run one benchmark case in a fresh subprocess: timeout, peak RSS, result parsing.

The child prints one line ``RESULT <json>`` on stdout. The parent polls the RSS of the
child's whole process tree (the multiprocess executor forks step processes) with psutil and
kills the process group if the case exceeds its timeout, so one hung alternative cannot
hang the suite; a crash, timeout or missing result is recorded, never raised.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import psutil

BENCH_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_PREFIX = "RESULT "


def _tree_rss(proc: psutil.Process) -> int:
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.Error:
        return 0
    for p in procs:
        with contextlib.suppress(psutil.Error):
            total += p.memory_info().rss
    return total


def run_case(
    module: str, spec: dict[str, Any], timeout: float, source: str | None = None
) -> dict[str, Any]:
    """Run ``python -m <module> <spec-json>`` under the benchmark interpreter; ``source``:
    a directory whose ``dagloop`` package is imported instead of the installed one (a
    snapshot of another commit's ``src``, to compare two versions in one run)."""
    env = dict(os.environ)
    paths = [BENCH_DIR, *([source] if source else []), env.get("PYTHONPATH", "")]
    env["PYTHONPATH"] = os.pathsep.join(p for p in paths if p)
    env.setdefault("PYTHONHASHSEED", "0")
    env["DAGSTER_DISABLE_TELEMETRY"] = "1"
    with tempfile.TemporaryFile(mode="w+") as out, tempfile.TemporaryFile(mode="w+") as err:
        t0 = time.monotonic()
        child = subprocess.Popen(
            [sys.executable, "-m", module, json.dumps(spec)],
            cwd=BENCH_DIR,
            env=env,
            stdout=out,
            stderr=err,
            start_new_session=True,
        )
        peak = 0
        stop = threading.Event()

        def poll() -> None:
            nonlocal peak
            try:
                ps = psutil.Process(child.pid)
            except psutil.Error:
                return
            while not stop.is_set():
                peak = max(peak, _tree_rss(ps))
                stop.wait(0.05)

        poller = threading.Thread(target=poll, daemon=True)
        poller.start()
        timed_out = False
        try:
            child.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            timed_out = True
            with contextlib.suppress(ProcessLookupError):
                os.killpg(child.pid, signal.SIGKILL)
            child.wait()
        finally:
            stop.set()
            poller.join()
        elapsed = time.monotonic() - t0
        out.seek(0)
        err.seek(0)
        stdout = out.read()
        stderr = err.read()

    result: dict[str, Any] | None = None
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            result = json.loads(line[len(RESULT_PREFIX) :])
            break
    if result is None:
        result = {"ok": False}
        if timed_out:
            result["error"] = f"timeout after {timeout:.0f} s"
        else:
            tail = (stderr.strip().splitlines() or ["(no output)"])[-1]
            result["error"] = f"exit {child.returncode}: {tail}"[:300]
    result["peak_rss_tree_mb"] = round(peak / 2**20, 1)
    result["process_seconds"] = round(elapsed, 2)
    if not result.get("ok") and "stderr_tail" not in result:
        result["stderr_tail"] = stderr[-2000:]
    return result


@dataclass
class Measured:
    """What `measured` saw of one call."""

    result: Any
    wall: float
    #: CPU seconds of this process, and of its child processes during the call: those
    #: that ended (getrusage) and those still alive, with what their own ended children
    #: used (a multiprocessing forkserver and the workers it forked).
    cpu_self: float
    cpu_children: float
    profile: Any  # cProfile.Profile, or None

    @property
    def cpu(self) -> float:
        return self.cpu_self + self.cpu_children


def measured(call: Callable[[], Any], *, profile: bool = False) -> Measured:
    """`call()` after a full collection, with its wall and CPU time (getrusage), under
    cProfile if asked."""
    import cProfile
    import gc
    import resource

    gc.collect()
    prof = cProfile.Profile() if profile else None
    live0 = live_children_cpu()
    ru0 = resource.getrusage(resource.RUSAGE_SELF)
    rc0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    if prof is not None:
        prof.enable()
    try:
        result = call()
    finally:
        if prof is not None:
            prof.disable()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_SELF)
    rc1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    live = {pid: cpu - live0.get(pid, 0.0) for pid, cpu in live_children_cpu().items()}
    return Measured(
        result=result,
        wall=wall,
        cpu_self=ru1.ru_utime + ru1.ru_stime - ru0.ru_utime - ru0.ru_stime,
        cpu_children=rc1.ru_utime + rc1.ru_stime - rc0.ru_utime - rc0.ru_stime + sum(live.values()),
        profile=prof,
    )


def live_children_cpu() -> dict[int, float]:
    """CPU seconds of each live child process of this one, with the ended children it
    waited for (a forkserver's forked workers end before it does)."""
    import psutil

    out: dict[int, float] = {}
    for child in psutil.Process().children():
        with contextlib.suppress(psutil.Error):
            t = child.cpu_times()
            out[child.pid] = t.user + t.system + t.children_user + t.children_system
    return out


@contextlib.contextmanager
def case_dir(prefix: str) -> Iterator[str]:
    """A scratch directory for one case (its instance, its files), removed afterwards."""
    tmp = tempfile.mkdtemp(prefix=prefix)
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def peak_rss_self_mb() -> float:
    """This process's own RSS high-water mark (VmHWM). Unlike getrusage's ru_maxrss, which
    Linux carries over from the parent across fork+exec, it starts fresh at exec."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def emit(result: dict[str, Any]) -> None:
    """Child side: print the result line."""
    sys.stdout.flush()
    print(RESULT_PREFIX + json.dumps(result), flush=True)


def child_main(main: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
    """Child side: run `main` on the spec given as the first argument and print its result
    line; an exception becomes a failed result (with the traceback on stderr)."""
    spec = json.loads(sys.argv[1])
    try:
        result = main(spec)
    except BaseException as e:
        traceback.print_exc()
        result = {"ok": False, "error": f"{type(e).__name__}: {e}"[:300]}
    emit(result)


def is_worker(cmdline: str, direct: bool) -> bool:
    """A worker process of a local Dask cluster, from its command line and whether it is
    the run process's own child: spawned by the run process, or forked by its forkserver
    (its child, with the same command line as the workers it forks)."""
    return "spawn_main" in cmdline or ("forkserver" in cmdline and not direct)
