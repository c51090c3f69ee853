"""Child process of ``cost_model.py``: one fan-out run, instrumented, in one of two passes.

Usage: python -m harness.cost_case '<json spec>'
spec = {executor, instance, n, sleep, pass: "clocks" | "profile", pg_url?, profile_path?}

``clocks`` (nothing in the run's code paths is traced, so its timings are the real ones):
  * CPU time of every thread: the run's main thread (which runs the event loop under
    dagloop, everything under in_process) from ``time.thread_time()`` around the run;
    every other Python thread from ``time.thread_time()`` at the end of its ``run()``
    (``threading.Thread.run`` is wrapped), keyed by thread name;
  * the main thread's time blocked in the event loop's selector (``select`` wrapped):
    idle, waiting for the writer thread, a worker thread or a timer;
  * its time runnable but not running because the machine's cores were busy
    (``/proc/thread-self/schedstat``, field 2: run-queue delay), i.e. other load;
  * garbage collection: every collection timed with ``gc.callbacks``, per thread and
    generation.
  The rest of the main thread's wall, ``wall - CPU - selector - run queue``, is time it
  was off the CPU for another reason: waiting to take the GIL back from another thread
  of the process (the bulk, on an in-memory instance) or blocked in a system call
  outside the selector (file writes; on SQLite, fsync of direct writes).

``profile``: the same run sampled by py-spy from outside the process (200 Hz, only the
  thread holding the GIL, the process never paused: Python 3.12's cProfile traces every
  thread with one clock, so it cannot attribute one thread's time). Each main-thread
  sample is given one category (``categorize_stack``): Dagster's ActiveExecution if any
  frame is in it; else storing entries if any frame is the instance's or dagloop's
  event-log code; else Dagster's logging if any frame is in its log manager or
  ``logging``; else the innermost frame of dagloop (orchestration) or of Dagster/the job
  (step code); a stack of only the interpreter's modules is the event loop itself
  (orchestration). Samples of other threads tell who else held the GIL.
"""

from __future__ import annotations

import gc
import os
import signal
import subprocess
import sys
import threading
import time
from typing import Any

from harness.proc import case_dir, child_main, peak_rss_self_mb

#: Owners of a sampled stack, from its innermost frame outwards: the first frame whose
#: file matches decides (substrings of the file name, in this order per frame).
ACTIVE_EXECUTION = "Dagster's ActiveExecution (scheduling)"
EVENT_LOG = "event log: storing entries (main thread)"
LOGGING = "event log: Dagster's logging (records, handlers)"
STEP = "Dagster's step code"
ORCHESTRATION = "dagloop's orchestration (and the event loop)"
#: Whole-stack rules first: any frame of these files makes the sample theirs.
STACK_RULES: list[tuple[str, tuple[str, ...]]] = [
    (ACTIVE_EXECUTION, ("dagster/_core/execution/plan/active.py",)),
    (
        EVENT_LOG,
        (
            "dagloop/dagster/event_log/",
            "dagloop/dagster/entry_routes.py",
            "dagster/_core/instance/__init__.py",
            "dagster/_core/storage/event_log/",
        ),
    ),
    (LOGGING, ("dagster/_core/log_manager.py", "/logging/__init__.py")),
]
#: Then the innermost frame of a known owner.
FRAME_RULES: list[tuple[str, tuple[str, ...]]] = [
    (ORCHESTRATION, ("dagloop/",)),
    (STEP, ("dagster/", "dagster_shared/", "/jobs/", "anyio/")),
]
CATEGORIES = [STEP, ORCHESTRATION, ACTIVE_EXECUTION, LOGGING, EVENT_LOG]


def categorize_stack(frames: list[str]) -> str:
    """The category of one sampled stack (frames root first, as py-spy writes them)."""
    for category, needles in STACK_RULES:
        if any(n in f for f in frames for n in needles):
            return category
    for frame in reversed(frames):
        for category, needles in FRAME_RULES:
            if any(n in frame for n in needles):
                return category
    return ORCHESTRATION  # only the interpreter's own modules: the event loop itself


def read_samples(path: str) -> dict[str, Any]:
    """py-spy's raw output (`thread (tid): name;frame;...;frame count`) as samples per
    category of the main thread, and samples per thread name (who held the GIL)."""
    main: dict[str, int] = dict.fromkeys(CATEGORIES, 0)
    holders: dict[str, int] = {}
    with open(path) as f:
        for line in f:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            parts = stack.split(";")
            thread = parts[0].split(": ", 1)[-1]
            name = thread.split("_")[0].rstrip("0123456789-")
            holders[name] = holders.get(name, 0) + int(count)
            if thread == "MainThread":
                category = categorize_stack(parts[1:])
                main[category] += int(count)
    return {"main": main, "holders": holders}


class _Clocks:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.thread_cpu: dict[str, float] = {}
        self.gc_seconds: dict[str, float] = {}
        self.gc_by_generation: dict[int, list[float]] = {}
        self.select_seconds = 0.0
        self.select_calls = 0
        self._gc_started: dict[int, float] = {}
        self._main = threading.main_thread().ident

    def install(self) -> None:
        import selectors

        clocks = self
        original_run = threading.Thread.run

        def run(thread: threading.Thread) -> None:
            try:
                original_run(thread)
            finally:
                name = thread.name.split("_")[0].rstrip("0123456789-")
                with clocks.lock:
                    clocks.thread_cpu[name] = clocks.thread_cpu.get(name, 0.0) + time.thread_time()

        threading.Thread.run = run  # type: ignore[method-assign]
        selector_class = selectors.DefaultSelector
        original_select = selector_class.select

        def select(sel: Any, timeout: float | None = None) -> Any:
            if threading.get_ident() != clocks._main:
                return original_select(sel, timeout)
            started = time.perf_counter()
            try:
                return original_select(sel, timeout)
            finally:
                clocks.select_seconds += time.perf_counter() - started
                clocks.select_calls += 1

        selector_class.select = select  # type: ignore[method-assign]
        gc.callbacks.append(self._gc)

    def _gc(self, phase: str, info: dict[str, Any]) -> None:
        ident = threading.get_ident()
        if phase == "start":
            self._gc_started[ident] = time.perf_counter()
            return
        started = self._gc_started.pop(ident, None)
        if started is None:
            return
        spent = time.perf_counter() - started
        who = "main" if ident == self._main else "other threads"
        self.gc_seconds[who] = self.gc_seconds.get(who, 0.0) + spent
        gen = self.gc_by_generation.setdefault(info["generation"], [0, 0.0])
        gen[0] += 1
        gen[1] += spent


def _schedstat() -> tuple[float, float]:
    """(seconds on CPU, seconds waiting in the run queue) of the calling thread."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            on_cpu, waiting, _ = f.read().split()
        return int(on_cpu) / 1e9, int(waiting) / 1e9
    except (OSError, ValueError):
        return 0.0, 0.0


def _start_py_spy(path: str) -> subprocess.Popen[bytes]:
    """py-spy sampling this process from outside (no GIL taken, the process not paused):
    only samples of threads holding the GIL, 200 a second."""
    spy_bin = os.path.join(os.path.dirname(sys.executable), "py-spy")
    command = [spy_bin, "record", "--pid", str(os.getpid()), "--format", "raw", "--threads"]
    command += ["--gil", "--nonblocking", "--full-filenames", "--rate", "200", "-o", path]
    spy = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    return spy


def _stop_py_spy(spy: subprocess.Popen[bytes]) -> None:
    spy.send_signal(signal.SIGINT)
    spy.wait(timeout=60)


def main(spec: dict[str, Any]) -> dict[str, Any]:
    import dagster as dg

    from harness.dagster_case import check_run, fanout_run

    n = int(spec["n"])
    with case_dir("dagloop-cost-") as tmp:
        instance, recon, run_config = fanout_run(spec, tmp)
        clocks = _Clocks()
        spy = None
        if spec["pass"] == "clocks":
            clocks.install()
        else:
            spy = _start_py_spy(spec["samples_path"])
        gc.collect()
        load = os.getloadavg()[0]
        cpu0, (_, queue0) = time.thread_time(), _schedstat()
        t0 = time.perf_counter()
        result = dg.execute_job(recon, instance=instance, run_config=run_config)
        wall = time.perf_counter() - t0
        main_cpu = time.thread_time() - cpu0
        run_queue = _schedstat()[1] - queue0
        out: dict[str, Any] = {
            "wall": round(wall, 4),
            "main_cpu": round(main_cpu, 4),
            "loadavg_1min": [round(load, 2), round(os.getloadavg()[0], 2)],
            "peak_rss_self_mb": round(peak_rss_self_mb(), 1),
            **check_run(instance, result, n),
        }
        if spy is None:
            out.update(
                main_selector=round(clocks.select_seconds, 4),
                main_selector_calls=clocks.select_calls,
                main_run_queue=round(run_queue, 4),
                main_off_cpu_other=round(wall - main_cpu - clocks.select_seconds - run_queue, 4),
                thread_cpu={k: round(v, 4) for k, v in sorted(clocks.thread_cpu.items())},
                gc_seconds={k: round(v, 4) for k, v in clocks.gc_seconds.items()},
                gc_by_generation={
                    str(g): {"collections": c, "seconds": round(s, 4)}
                    for g, (c, s) in sorted(clocks.gc_by_generation.items())
                },
            )
        else:
            _stop_py_spy(spy)
            out["samples"] = read_samples(spec["samples_path"])
        instance.dispose()
        return out


if __name__ == "__main__":
    child_main(main)
