"""The real entry points, as a user runs them.

`dagster job execute -f examples/<file>.py -j <job>`, `dg launch -f ... --job ...`, and
a run launched through the `dagster dev` webserver with the GraphQL client, each in
subprocesses with their own temporary DAGSTER_HOME. Each test then opens that instance
and checks the run's event log for dagloop's engine event, so a silent fallback to
another executor would fail.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import dagster as dg
import psutil
import pytest
from dagster_graphql import DagsterGraphQLClient

from tests.dagster.conftest import ENGINE_MARK

REPO = Path(__file__).resolve().parents[2]
# The `dagster` command of the environment running the tests, wherever its venv is.
DAGSTER = Path(sys.executable).parent / "dagster"
DG = Path(sys.executable).parent / "dg"
TERMINAL = {"SUCCESS", "FAILURE", "CANCELED"}

# Small sizes so each run takes a second or two.
FAST_ENV = {
    "DAGLOOP_FANOUT": "10",
    "DAGLOOP_SLEEP": "0.1",
    "DAGLOOP_MIXED_ITEMS": "6",
    "DAGLOOP_MIXED_SLEEP": "0.1",
}


def _dagster_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    return home


def _env(home: Path) -> dict[str, str]:
    return {
        **os.environ,
        **FAST_ENV,
        "DAGSTER_HOME": str(home),
        "PYTHONUNBUFFERED": "1",
        "DAGSTER_DG_UPDATE_CHECK_ENABLED": "0",  # no look-up of dg's newest release
    }


def _engine_messages(instance: dg.DagsterInstance, run_id: str) -> list[str]:
    return [
        record.user_message
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)
    ]


def _single_run(instance: dg.DagsterInstance, job_name: str) -> dg.DagsterRun:
    runs = instance.get_runs()
    assert [run.job_name for run in runs] == [job_name]
    return runs[0]


def _step_successes(instance: dg.DagsterInstance, run_id: str) -> set[str]:
    return {
        record.step_key
        for record in instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_SUCCESS)
        if record.step_key is not None
    }


# -- dagster job execute ------------------------------------------------------------------

CLI_CASES = [
    pytest.param(
        "examples/quickstart.py",
        "fanout_job",
        {"create_dynamic_outputs", "collect_results"}
        | {f"process_item[key_{i}]" for i in range(10)},
        id="quickstart",
    ),
    pytest.param(
        "examples/mixed_sync_async.py",
        "mixed_job",
        {"load_settings", "list_items", "summarize"}
        | {f"fetch[i{i}]" for i in range(6)}
        | {f"parse[i{i}]" for i in range(6)},
        id="mixed_sync_async",
    ),
    pytest.param(
        "examples/assets.py",
        "assets_job",
        {
            "orders",
            "customers",
            "order_stats",
            "report",
            "orders_orders_have_ids",
            "report_report_not_empty",
        },
        id="assets",
    ),
]


def _cli_command(cli: str, example: str, job_name: str) -> list[str]:
    if cli == "dg":  # Dagster's current CLI (dagster-dg-cli)
        return [str(DG), "launch", "-f", example, "--job", job_name]
    return [str(DAGSTER), "job", "execute", "-f", example, "-j", job_name]


@pytest.mark.parametrize(
    ("cli", "example", "job_name", "expected_steps"),
    [pytest.param("dagster", *case.values, id=f"dagster-{case.id}") for case in CLI_CASES]
    + [pytest.param("dg", *CLI_CASES[0].values, id="dg-launch-quickstart")],
)
def test_dagster_job_execute_cli(
    tmp_path: Path, cli: str, example: str, job_name: str, expected_steps: set[str]
) -> None:
    home = _dagster_home(tmp_path)
    completed = subprocess.run(
        _cli_command(cli, example, job_name),
        cwd=REPO,
        env=_env(home),
        capture_output=True,
        text=True,
        timeout=180,
    )
    output = completed.stdout + completed.stderr
    assert completed.returncode == 0, output[-4000:]
    assert ENGINE_MARK in output
    assert "RUN_SUCCESS" in output

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = _single_run(instance, job_name)
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert any(ENGINE_MARK in m for m in _engine_messages(instance, run.run_id))
        assert _step_successes(instance, run.run_id) == expected_steps
        if job_name == "assets_job":
            for key in ("orders", "customers", "order_totals", "order_count", "report"):
                event = instance.get_latest_materialization_event(dg.AssetKey(key))
                assert event is not None and event.run_id == run.run_id, key
            checks = [
                r.dagster_event.event_specific_data
                for r in instance.all_logs(
                    run.run_id, of_type=dg.DagsterEventType.ASSET_CHECK_EVALUATION
                )
            ]
            assert sorted((c.check_name, c.passed) for c in checks) == [
                ("orders_have_ids", True),
                ("report_not_empty", True),
            ]


# -- dagster dev + GraphQL client -----------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_WORKSPACE_QUERY = """
{ workspaceOrError { __typename ... on Workspace {
    locationEntries { name loadStatus locationOrLoadError { __typename } } } } }
"""


def _location_loaded(port: int) -> bool:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": _WORKSPACE_QUERY}).encode(),
        headers={"Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            body = json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return False
    workspace = (body.get("data") or {}).get("workspaceOrError") or {}
    entries = workspace.get("locationEntries") or []
    return bool(entries) and all(
        entry["loadStatus"] == "LOADED"
        and (entry["locationOrLoadError"] or {}).get("__typename") == "RepositoryLocation"
        for entry in entries
    )


def _alive(processes: list[psutil.Process]) -> list[psutil.Process]:
    alive = []
    for process in processes:
        try:
            if process.is_running() and process.status() != psutil.STATUS_ZOMBIE:
                alive.append(process)
        except psutil.NoSuchProcess:
            pass
    return alive


def _group_and_descendants(leader: subprocess.Popen[bytes]) -> list[psutil.Process]:
    found: dict[int, psutil.Process] = {}
    try:
        root = psutil.Process(leader.pid)
        found[root.pid] = root
        for child in root.children(recursive=True):
            found[child.pid] = child
    except psutil.NoSuchProcess:
        pass
    for process in psutil.process_iter():
        try:
            if os.getpgid(process.pid) == leader.pid:
                found.setdefault(process.pid, process)
        except (ProcessLookupError, psutil.NoSuchProcess):
            pass
    return list(found.values())


def _shut_down(leader: subprocess.Popen[bytes]) -> list[str]:
    """Stop `dagster dev` as Ctrl-C does (SIGINT to its process group); return leftovers.

    Anything still alive after a generous wait is killed, and reported.
    """
    tracked = _group_and_descendants(leader)
    with suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGINT)
    with suppress(subprocess.TimeoutExpired):
        leader.wait(timeout=60)
    deadline = time.monotonic() + 30
    while _alive(tracked) and time.monotonic() < deadline:
        time.sleep(0.2)
    leftovers = _alive(tracked)
    described = []
    for process in leftovers:
        try:
            described.append(f"{process.pid}: {' '.join(process.cmdline())[:120]}")
            process.kill()
        except psutil.NoSuchProcess:
            pass
    if leader.poll() is None:
        leader.kill()
        leader.wait(timeout=10)
    return described


@contextmanager
def dagster_dev(example: str, home: Path, log_path: Path) -> Iterator[int]:
    """`dagster dev -f <example>` on a free loopback port; yields the port once the code
    location has loaded, and shuts the whole process group down on exit."""
    port = _free_port()
    with log_path.open("wb") as log:
        leader = subprocess.Popen(
            [str(DAGSTER), "dev", "-f", example, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO,
            env=_env(home),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 120
            while not _location_loaded(port):
                assert leader.poll() is None, (
                    f"dagster dev exited early:\n{log_path.read_text()[-4000:]}"
                )
                assert time.monotonic() < deadline, (
                    f"dagster dev not ready after 120 s:\n{log_path.read_text()[-4000:]}"
                )
                time.sleep(0.3)
            yield port
        finally:
            leftovers = _shut_down(leader)
    assert leader.returncode is not None
    assert not leftovers, f"processes left behind by dagster dev: {leftovers}"


def test_run_launched_through_dagster_dev_webserver(tmp_path: Path) -> None:
    home = _dagster_home(tmp_path)
    log_path = tmp_path / "dagster_dev.log"

    with dagster_dev("examples/mixed_sync_async.py", home, log_path) as port:
        client = DagsterGraphQLClient("127.0.0.1", port_number=port, timeout=60)
        run_id = client.submit_job_execution("mixed_job")
        deadline = time.monotonic() + 120
        status = client.get_run_status(run_id)
        while status.value not in TERMINAL:
            assert time.monotonic() < deadline, f"run still {status} after 120 s"
            time.sleep(0.3)
            status = client.get_run_status(run_id)
        assert status == dg.DagsterRunStatus.SUCCESS, log_path.read_text()[-4000:]

    with dg.DagsterInstance.from_config(str(home)) as instance:
        run = instance.get_run_by_id(run_id)
        assert run is not None
        assert run.status == dg.DagsterRunStatus.SUCCESS
        assert run.job_name == "mixed_job"
        # The run worker used dagloop's executor (in its own process, not the server's).
        engine = _engine_messages(instance, run_id)
        assert any(ENGINE_MARK in m for m in engine), engine
        assert _step_successes(instance, run_id) == (
            {"load_settings", "list_items", "summarize"}
            | {f"fetch[i{i}]" for i in range(6)}
            | {f"parse[i{i}]" for i in range(6)}
        )
        summary = [
            r.user_message
            for r in instance.all_logs(run_id)
            if r.dagster_event is None and r.user_message.startswith("summary:")
        ]
        assert summary == ["summary: {'items': 6, 'total_size': 36}"]
