"""Every example of async-dag's README (seed 002) and dagron's "Executing Tasks" guide
(seed 003) runs on dagloop with only its import line changed, and prints what its
document says.

The examples live, as written in the documents, in `seed_examples/*.txt` (plain text,
so no formatter tidies them). What the documents leave implicit (the README's task
functions; the guide's `dag`, `tasks`, `executor` and `pipeline` from earlier
sections) is supplied here, in `CONTEXTS`.
`CHECKS` then asserts what each document says happens beyond what it prints.
"""

from __future__ import annotations

import ast
import asyncio
import contextlib
import inspect
import io
import itertools
import re
import signal
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import dagloop

HERE = Path(__file__).parent / "seed_examples"
FLOAT = r"\d+(?:\.\d+)?(?:e-?\d+)?"


@dataclass
class Example:
    key: str
    code: str
    output: list[str] | None
    ordered: bool


def load_examples(document: str) -> list[Example]:
    text = (HERE / document).read_text(encoding="utf-8")
    examples: list[Example] = []
    for section in re.split(r"^## ", text, flags=re.M)[1:]:
        number_and_name = section.split("\n", 1)[0].strip()
        code = re.search(r"```python\n(.*?)```", section, re.S)
        assert code is not None, number_and_name
        output = re.search(r"```output( unordered)?\n(.*?)```", section, re.S)
        examples.append(
            Example(
                key=f"{document[:3]}-{number_and_name.replace(' ', '-')}",
                code=code.group(1),
                output=output.group(2).splitlines() if output else None,
                ordered=not (output and output.group(1)),
            )
        )
    return examples


EXAMPLES = load_examples("002_async_dag_readme.txt") + load_examples(
    "003_dagron_executing_tasks.txt"
)


# -- what the documents leave implicit -------------------------------------------------

README_TASKS = """
import asyncio
import time

# (name, start, end) of every call, to see what ran in parallel.
calls = []

def timed(name, seconds, compute):
    async def run(*args):
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        calls.append((name, start, time.perf_counter()))
        return compute(*args)
    run.__name__ = name
    return run

fast_task_a = timed("fast_task_a", 0.02, lambda: "A")
slow_task_b = timed("slow_task_b", 0.15, lambda a: a + "b")
slow_task_a = timed("slow_task_a", 0.15, lambda: "a")
fast_task_b = timed("fast_task_b", 0.02, lambda: "B")
fast_task_c = timed("fast_task_c", 0.02, lambda a, b: a + b + "c")
end_task = timed("end_task", 0.02, lambda left, right: left + "|" + right)
"""

DIAMOND = """
import dagloop as dagron
dag = (
    dagron.DAG.builder()
    .add_edge("a", "b").add_edge("a", "c").add_edge("b", "d").add_edge("c", "d")
    .build()
)
tasks = {
    "a": lambda: "data",
    "b": lambda: "processed_b",
    "c": lambda: "processed_c",
    "d": lambda: "merged",
}
"""

ETL_PIPELINE = """
from dagloop import Pipeline, task

@task
def download():
    return {"raw": [1, 2, 3]}

@task
def normalize(download):
    return [x * 10 for x in download["raw"]]

@task
def summarize(normalize):
    return {"count": len(normalize), "total": sum(normalize)}

pipeline = Pipeline(tasks=[download, normalize, summarize], name="etl")
"""

CONTEXTS: dict[str, str] = {
    "002-01-naive": README_TASKS,
    "002-02-better": README_TASKS,
    "002-03-optimal": README_TASKS,
    "002-04-async_dag": README_TASKS,
    "003-02-constructor_parameters": DIAMOND,
    "003-03-execute_method": DIAMOND + "executor = dagron.DAGExecutor(dag)\n",
    "003-04-execution_result": DIAMOND,
    "003-05-node_status": DIAMOND + "result = dagron.DAGExecutor(dag).execute(tasks)\n",
    "003-06-fail_fast": "import dagloop as dagron\n",
    "003-07-best_effort": "import dagloop as dagron\n",
    "003-08-global_timeout": DIAMOND,
    "003-09-cancellation": DIAMOND,
    "003-10-cancellation_signal": DIAMOND + "import threading\n",
    "003-11-callbacks": DIAMOND,
    "003-12-progress_tracking": DIAMOND,
    "003-13-cost_aware": DIAMOND,
    "003-16-dependency_inference": "from dagloop import Pipeline, task\n",
    "003-17-async_pipeline": ETL_PIPELINE,
    "003-18-max_workers": DIAMOND,
    "003-19-execution_plan": DIAMOND,
}


# -- what the documents say happens ----------------------------------------------------


def _spans(ns: dict[str, Any]) -> dict[str, tuple[float, float]]:
    spans = {name: (start, end) for name, start, end in ns["calls"]}
    assert len(spans) == 6, ns["calls"]
    return spans


def check_naive(ns: dict[str, Any], caught: list[Any]) -> None:
    """The naive version awaits one call after the other: nothing overlaps."""
    ordered = sorted(_spans(ns).values())
    assert all(before[1] <= after[0] for before, after in itertools.pairwise(ordered))


def check_better(ns: dict[str, Any], caught: list[Any]) -> None:
    assert (ns["fast_task_a_res"], ns["slow_task_a_res"], ns["fast_task_b_res"]) == ("A", "a", "B")


def check_maximal_parallelism(spans: dict[str, tuple[float, float]]) -> None:
    """slow_task_b starts as soon as fast_task_a ends, without waiting for slow_task_a;
    fast_task_c waits for both of its inputs; end_task for both branches."""
    assert spans["slow_task_b"][0] < spans["slow_task_a"][1]
    assert spans["fast_task_c"][0] >= max(spans["slow_task_a"][1], spans["fast_task_b"][1])
    assert spans["end_task"][0] >= max(spans["slow_task_b"][1], spans["fast_task_c"][1])


def check_optimal(ns: dict[str, Any], caught: list[Any]) -> None:
    check_maximal_parallelism(_spans(ns))


def check_async_dag(ns: dict[str, Any], caught: list[Any]) -> None:
    assert ns["end_task_result"] == "Ab|aBc"
    assert ns["fast_task_c_node"].extract_result(ns["execution_result"]) == "aBc"
    check_maximal_parallelism(_spans(ns))


def check_diamond_ran(ns: dict[str, Any], caught: list[Any]) -> None:
    result = ns["result"]
    assert result.ok and result.succeeded == 4
    assert result.value("d") == "merged"


def check_fail_fast(ns: dict[str, Any], caught: list[Any]) -> None:
    """The slow node that was already running finishes; only the failure's descendant
    is skipped."""
    assert ns["result"].node_results["a"].status is dagloop.NodeStatus.COMPLETED


def check_constructor(ns: dict[str, Any], caught: list[Any]) -> None:
    """The fragment builds an executor from every parameter the guide lists; running it
    (done above, without error) is the check. The context's graph is still usable."""
    assert ns["dag"].node_count() == 4


def check_costs(ns: dict[str, Any], caught: list[Any]) -> None:
    """The guide's cost names are not nodes of the diamond: one warning, and the run goes
    on (costs are hints)."""
    check_diamond_ran(ns, caught)
    assert len(caught) == 1
    assert "'train_model', 'evaluate', 'preprocess'" in str(caught[0].message)


def check_inference(ns: dict[str, Any], caught: list[Any]) -> None:
    assert sorted(ns["pipeline"].dag.edges) == [("a", "c"), ("b", "c")]
    assert ns["pipeline"].execute().value("c") == 3


def check_async_pipeline(ns: dict[str, Any], caught: list[Any]) -> None:
    assert ns["result"].value("summarize") == {"count": 3, "total": 60}


def check_all_together(ns: dict[str, Any], caught: list[Any]) -> None:
    result = ns["result"]
    assert result.ok and result.trace is not None
    assert {span.name for span in result.trace.spans} == set(ns["tasks"])


Check = Callable[[dict[str, Any], list[Any]], None]

CHECKS: dict[str, Check] = {
    "002-01-naive": check_naive,
    "002-02-better": check_better,
    "002-03-optimal": check_optimal,
    "002-04-async_dag": check_async_dag,
    "003-01-dagexecutor": check_diamond_ran,
    "003-02-constructor_parameters": check_constructor,
    "003-03-execute_method": check_diamond_ran,
    "003-04-execution_result": check_diamond_ran,
    "003-05-node_status": check_diamond_ran,
    "003-06-fail_fast": check_fail_fast,
    "003-08-global_timeout": check_diamond_ran,
    "003-09-cancellation": check_diamond_ran,
    "003-10-cancellation_signal": check_diamond_ran,
    "003-11-callbacks": check_diamond_ran,
    "003-12-progress_tracking": check_diamond_ran,
    "003-13-cost_aware": check_costs,
    "003-16-dependency_inference": check_inference,
    "003-17-async_pipeline": check_async_pipeline,
    "003-18-max_workers": check_diamond_ran,
    "003-19-execution_plan": lambda ns, caught: None,  # its output is the check
    "003-20-all_together": check_all_together,
}


# -- running them ----------------------------------------------------------------------


@contextlib.contextmanager
def sigint_restored() -> Iterator[None]:
    """Example 003-10 installs a SIGINT handler; put pytest's back afterwards."""
    previous = signal.getsignal(signal.SIGINT)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_example(example: Example) -> tuple[str, dict[str, Any], list[Any]]:
    namespace: dict[str, Any] = {"__name__": "seed_example"}
    exec(compile(CONTEXTS.get(example.key, ""), "<context>", "exec"), namespace)
    # The README's snippets use `await` at the top level, as in an async REPL.
    code = compile(example.code, f"<{example.key}>", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)
    stdout = io.StringIO()
    with (
        sigint_restored(),
        warnings.catch_warnings(record=True) as caught,
        contextlib.redirect_stdout(stdout),
    ):
        warnings.simplefilter("always")
        outcome = eval(code, namespace)
        if inspect.iscoroutine(outcome):
            asyncio.run(outcome)
    return stdout.getvalue(), namespace, caught


def matches(expected: str, actual: str) -> bool:
    pattern = re.escape(expected).replace(re.escape("<float>"), FLOAT)
    return re.fullmatch(pattern, actual) is not None


def test_every_example_of_both_documents_is_here() -> None:
    assert [e.key[:6] for e in EXAMPLES] == [f"002-0{i}" for i in range(1, 5)] + [
        f"003-{i:02d}" for i in range(1, 21)
    ]
    assert set(CONTEXTS) <= {e.key for e in EXAMPLES}
    assert set(CHECKS) | {e.key for e in EXAMPLES if e.output} == {e.key for e in EXAMPLES}


@pytest.mark.parametrize("example", EXAMPLES, ids=[e.key for e in EXAMPLES])
def test_example_runs_and_prints_what_its_document_says(example: Example) -> None:
    printed, namespace, caught = run_example(example)
    lines = printed.splitlines()
    if example.output is None:
        assert lines == [], "the document shows no output for this example"
    elif example.ordered:
        assert len(lines) == len(example.output), printed
        for expected, actual in zip(example.output, lines, strict=True):
            assert matches(expected, actual), (expected, actual)
    else:
        unmatched = list(lines)
        for expected in example.output:
            found = next((line for line in unmatched if matches(expected, line)), None)
            assert found is not None, (expected, printed)
            unmatched.remove(found)
        assert unmatched == [], printed
    if example.key != "003-13-cost_aware":
        assert [str(w.message) for w in caught] == []
    check = CHECKS.get(example.key)
    if check is not None:
        check(namespace, caught)
