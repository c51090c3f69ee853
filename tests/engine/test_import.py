from __future__ import annotations

import subprocess
import sys

import dagloop


def test_import_dagloop_does_not_import_dagster() -> None:
    code = (
        "import sys, dagloop\n"
        "leaked = sorted(m for m in sys.modules if m == 'dagster' or m.startswith('dagster.'))\n"
        "print(leaked)\n"
        "raise SystemExit(1 if leaked else 0)\n"
    )
    completed = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60
    )
    assert completed.returncode == 0, completed.stdout + completed.stderr


def test_public_api_is_exported() -> None:
    for name in dagloop.__all__:
        assert hasattr(dagloop, name), name
    assert {"DAG", "AsyncDAGExecutor", "DAGExecutor", "Pipeline", "task", "build_dag"} <= set(
        dagloop.__all__
    )
