"""The builder style (build_dag) and Pipeline with parameter-name edges."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest

from dagloop import (
    NodeFailures,
    NodeNotCompletedError,
    NodeStatus,
    Pipeline,
    RetryPolicy,
    build_dag,
    task,
)

# -- build_dag ---------------------------------------------------------------------------


def test_builder_style_passes_results_positionally_and_by_keyword() -> None:
    async def fetch(url: str) -> str:
        return f"<html>{url}</html>"

    def parse(html: str, *, strip: bool = False) -> str:
        return html.removeprefix("<html>").removesuffix("</html>") if strip else html

    async def combine(raw: str, parsed: str, suffix: str) -> str:
        return f"{parsed}|{len(raw)}|{suffix}"

    async def main() -> Any:
        with build_dag() as g:
            page = g.add_node(fetch, g.parameter_node)
            parsed = g.add_node(parse, page, strip=True)
            combined = g.add_node(combine, page, parsed, "!")
        result = await g.invoke("example.org")
        return combined.extract_result(result), parsed.extract_result(result), g.dag

    value, parsed_value, dag = asyncio.run(main())
    assert value == "example.org|24|!"
    assert parsed_value == "example.org"
    assert sorted(dag.edges) == [("fetch", "combine"), ("fetch", "parse"), ("parse", "combine")]


def test_builder_same_function_twice_gets_distinct_names() -> None:
    def one() -> int:
        return 1

    with build_dag() as g:
        first = g.add_node(one)
        second = g.add_node(one)
        named = g.add_node(one, name="third")
    result = g.invoke_sync()
    assert (first.name, second.name, named.name) == ("one", "one#2", "third")
    assert result.succeeded == 3


def test_builder_invoke_runs_again_with_a_new_parameter() -> None:
    with build_dag() as g:
        doubled = g.add_node(lambda x: x * 2, g.parameter_node)
    assert doubled.extract_result(g.invoke_sync(2)) == 4
    assert doubled.extract_result(g.invoke_sync(5)) == 10


def test_builder_injects_resources_not_given_explicitly() -> None:
    @contextlib.asynccontextmanager
    async def session() -> AsyncIterator[str]:
        yield "session-1"

    async def call(path: str, session: str) -> str:
        return f"{session}:{path}"

    with build_dag(resources={"session": session}) as g:
        out = g.add_node(call, "/users")
    assert out.extract_result(g.invoke_sync()) == "session-1:/users"


def test_builder_task_options_and_failure_extraction() -> None:
    attempts: list[int] = []

    async def flaky() -> str:
        attempts.append(1)
        raise ConnectionError("down")

    with build_dag(fail_fast=False) as g:
        bad = g.add_node(task(flaky, retry=RetryPolicy(max_attempts=2)))
        after = g.add_node(lambda x: x, bad)
    with pytest.raises(NodeFailures) as raised:
        g.invoke_sync()
    result = raised.value.result
    assert result[bad.name].attempts == 2
    assert result[after.name].status is NodeStatus.SKIPPED
    with pytest.raises(
        NodeNotCompletedError, match=r"node 'flaky' has no result: it ended FAILED"
    ) as info:
        bad.extract_result(result)
    assert isinstance(info.value.__cause__, ConnectionError)


def test_builder_is_frozen_after_build() -> None:
    with build_dag() as g:
        g.add_node(lambda: 1)
    with pytest.raises(ValueError, match=r"already built"):
        g.add_node(lambda: 2)


# -- Pipeline ----------------------------------------------------------------------------


@task
def download() -> dict[str, list[int]]:
    return {"raw": [1, 2, 3]}


@task
async def normalize(download: dict[str, list[int]]) -> list[int]:
    await asyncio.sleep(0)
    return [x * 10 for x in download["raw"]]


@task
def summarize(normalize: list[int], download: dict[str, list[int]]) -> dict[str, int]:
    return {"count": len(normalize), "total": sum(normalize), "raw": len(download["raw"])}


def test_pipeline_infers_edges_and_injects_return_values() -> None:
    pipeline = Pipeline(tasks=[summarize, normalize, download], name="etl")
    assert sorted(pipeline.dag.edges) == [
        ("download", "normalize"),
        ("download", "summarize"),
        ("normalize", "summarize"),
    ]
    result = pipeline.execute()
    assert result.value("summarize") == {"count": 3, "total": 60, "raw": 3}
    assert repr(pipeline) == "<Pipeline 'etl' tasks=3>"


def test_pipeline_execute_async_and_resources() -> None:
    @task
    async def query(db: dict[str, int]) -> int:
        return db["answer"]

    @task(name="report")
    def make_report(query: int) -> str:
        return f"answer={query}"

    pipeline = Pipeline([query, make_report], resources={"db": {"answer": 42}})
    result = asyncio.run(pipeline.execute_async(timeout=5))
    assert result.value("report") == "answer=42"


def test_pipeline_accepts_plain_functions_and_task_options() -> None:
    calls: list[int] = []

    def first() -> int:
        calls.append(1)
        if len(calls) < 2:
            raise OSError("transient")
        return 1

    def second(first: int, bonus: int = 10) -> int:
        return first + bonus

    result = Pipeline([task(first, retry=1), second]).execute()
    assert result.value("second") == 11
    assert result["first"].attempts == 2


def test_decorated_task_is_still_a_plain_callable() -> None:
    assert download() == {"raw": [1, 2, 3]}
    assert asyncio.run(normalize({"raw": [1]})) == [10]
