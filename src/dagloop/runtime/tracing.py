"""Records one span per attempt of a unit of work and exports Chrome trace JSON.

Independent of the engine and of Dagster: a span is a name, an attempt number, two
`time.perf_counter_ns()` readings, where it ran (the event loop or a thread) and a
status string. Open the exported file in https://ui.perfetto.dev or chrome://tracing.
"""

from __future__ import annotations

import heapq
import json
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

LOOP = "event loop"


@dataclass(frozen=True, slots=True)
class TraceSpan:
    name: str
    attempt: int
    start_ns: int
    end_ns: int
    #: `LOOP` for coroutines, otherwise the name of the thread that ran the call.
    where: str
    thread_id: int
    status: str
    error: str | None = None

    @property
    def duration_seconds(self) -> float:
        return (self.end_ns - self.start_ns) / 1e9


class TraceRecorder:
    """Thread-safe collector of `TraceSpan`s."""

    def __init__(self) -> None:
        self.origin_ns = time.perf_counter_ns()
        self._spans: list[TraceSpan] = []
        self._lock = threading.Lock()

    def add(self, span: TraceSpan) -> None:
        with self._lock:
            self._spans.append(span)

    def record(
        self,
        name: str,
        attempt: int,
        start_ns: int,
        end_ns: int,
        *,
        status: str,
        where: str | None = None,
        thread_id: int | None = None,
        error: BaseException | None = None,
    ) -> None:
        current = threading.current_thread()
        self.add(
            TraceSpan(
                name=name,
                attempt=attempt,
                start_ns=start_ns,
                end_ns=end_ns,
                where=where if where is not None else current.name,
                thread_id=thread_id if thread_id is not None else current.ident or 0,
                status=status,
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
        )

    @property
    def spans(self) -> list[TraceSpan]:
        with self._lock:
            return sorted(self._spans, key=lambda s: (s.start_ns, s.name))

    def __len__(self) -> int:
        return len(self._spans)

    def __iter__(self) -> Iterator[TraceSpan]:
        return iter(self.spans)

    def to_chrome_trace(self) -> dict[str, Any]:
        """The Trace Event Format ("X" complete events, microseconds).

        Spans that overlap on the event loop are spread over "lanes" so each track in
        the viewer holds properly nested events, which Perfetto requires.
        """
        pid = os.getpid()
        events: list[dict[str, Any]] = [
            {"ph": "M", "name": "process_name", "pid": pid, "tid": 0, "args": {"name": "dagloop"}}
        ]
        track_ids: dict[tuple[str, int], int] = {}
        # Per place: heap of (lane end time, lane number) to reuse the first free lane.
        lanes: dict[str, list[tuple[int, int]]] = {}
        lane_count: dict[str, int] = {}
        for span in self.spans:
            heap = lanes.setdefault(span.where, [])
            if heap and heap[0][0] <= span.start_ns:
                _, lane = heapq.heappop(heap)
            else:
                lane = lane_count.get(span.where, 0)
                lane_count[span.where] = lane + 1
            heapq.heappush(heap, (span.end_ns, lane))
            key = (span.where, lane)
            if key not in track_ids:
                track_ids[key] = len(track_ids) + 1
                label = span.where if lane == 0 else f"{span.where} ({lane + 1})"
                events.append(
                    {
                        "ph": "M",
                        "name": "thread_name",
                        "pid": pid,
                        "tid": track_ids[key],
                        "args": {"name": label},
                    }
                )
            args: dict[str, Any] = {"attempt": span.attempt, "status": span.status}
            if span.error is not None:
                args["error"] = span.error
            events.append(
                {
                    "name": span.name,
                    "cat": span.status,
                    "ph": "X",
                    "ts": (span.start_ns - self.origin_ns) / 1000,
                    "dur": max(span.end_ns - span.start_ns, 0) / 1000,
                    "pid": pid,
                    "tid": track_ids[key],
                    "args": args,
                }
            )
        return {"traceEvents": events, "displayTimeUnit": "ms"}

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write Chrome trace JSON to `path`."""
        with open(path, "w", encoding="utf-8") as out:
            json.dump(self.to_chrome_trace(), out)
