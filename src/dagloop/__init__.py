"""dagloop: run task graphs natively on one asyncio event loop.

`import dagloop` gives the standalone engine and never imports dagster; the Dagster
executor lives in `dagloop.dagster`.
"""

from .engine.builder import GraphBuilder, NodeRef, ParameterNode, TaskManager, build_dag
from .engine.callbacks import Callbacks
from .engine.errors import (
    ConfigError,
    CycleError,
    DagloopError,
    DuplicateNodeError,
    ForeignResultError,
    GraphError,
    NodeFailures,
    NodeNotCompletedError,
    NodeTimeoutError,
    ResourceError,
    SelfLoopError,
    TaskBindingError,
    UnknownNodeError,
)
from .engine.executor import AsyncDAGExecutor
from .engine.graph import DAG, CriticalPath, DAGBuilder, ExecutionStep
from .engine.pipeline import Pipeline
from .engine.progress import RichProgress
from .engine.results import ExecutionResult, NodeResult, NodeStatus
from .engine.retry import RetryPolicy
from .engine.sync_facade import DAGExecutor
from .engine.tasks import FanOut, Task, fan_out, task
from .runtime.tracing import TraceRecorder, TraceSpan

__all__ = [
    "DAG",
    "AsyncDAGExecutor",
    "Callbacks",
    "ConfigError",
    "CriticalPath",
    "CycleError",
    "DAGBuilder",
    "DAGExecutor",
    "DagloopError",
    "DuplicateNodeError",
    "ExecutionResult",
    "ExecutionStep",
    "FanOut",
    "ForeignResultError",
    "GraphBuilder",
    "GraphError",
    "NodeFailures",
    "NodeNotCompletedError",
    "NodeRef",
    "NodeResult",
    "NodeStatus",
    "NodeTimeoutError",
    "ParameterNode",
    "Pipeline",
    "ResourceError",
    "RetryPolicy",
    "RichProgress",
    "SelfLoopError",
    "Task",
    "TaskBindingError",
    "TaskManager",
    "TraceRecorder",
    "TraceSpan",
    "UnknownNodeError",
    "build_dag",
    "fan_out",
    "task",
]

__version__ = "0.1.0"
