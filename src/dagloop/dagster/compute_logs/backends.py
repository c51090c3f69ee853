"""Where one step attempt's stdout/stderr are stored: the instance's compute log manager,
under a fresh log key of the run (`[run_id, "compute_logs", <file key>]`), as a step of
Dagster's multiprocess executor gets (its child process runs a one-step plan that
captures under such a key).

Dagster's `ComputeLogManager.capture_logs` captures a whole process (it swaps file
descriptors), so concurrent steps of one process cannot each use it: their streams are
opened here instead, and closed the way `capture_logs` ends (the `complete` marker, an
upload for a cloud manager).
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from typing import Any, TextIO

from dagloop.dagster._internals import (
    CloudStorageComputeLogManager,
    ComputeIOType,
    LocalComputeLogManager,
    create_compute_log_file_key,
)


@dataclass(eq=False)
class StepStreams:
    """One step attempt's open stdout and stderr, stored under `log_key`."""

    log_key: Sequence[str]
    stdout: TextIO
    stderr: TextIO
    #: Closes both streams and marks the capture complete (uploads it, if the manager does).
    close: Callable[[], None]
    #: Closing uploads (a cloud manager): done off the loop.
    blocking_close: bool = False


class StepStorage:
    """Opens step attempts' streams where the run's compute log manager stores them."""

    def __init__(self, manager: Any) -> None:
        self.manager = manager
        self._local_dirs: dict[str, str | None] = {}

    def open(self, run_id: str) -> StepStreams | None:
        """Open a step attempt's streams under a fresh log key of the run; None when the
        manager stores nothing (e.g. NoOpComputeLogManager)."""
        manager = self.manager
        log_key = manager.build_log_key_for_run(run_id, create_compute_log_file_key())
        if isinstance(manager, LocalComputeLogManager):
            return self._open_local(log_key)
        return self._open_through_streams(log_key)

    def _open_local(self, log_key: Sequence[str]) -> StepStreams:
        """The local manager's files, at the paths it reads (`get_captured_local_path`),
        each created on the step's first write to it; the `complete` marker at the end,
        as after `capture_logs`. (`open_log_stream` would create, touch and resolve
        every path: five opens per step instead of one to three.)"""
        out_path, err_path, complete_path = self._local_paths(log_key)
        out, err = _LazyFile(out_path), _LazyFile(err_path)

        def close() -> None:
            try:
                out.close()
                err.close()
            finally:
                _touch(complete_path)

        return StepStreams(log_key, out, err, close)  # type: ignore[arg-type]

    def _local_paths(self, log_key: Sequence[str]) -> tuple[str, str, str]:
        manager = self.manager
        *namespace, file_key = log_key
        prefix = "/".join(namespace)
        if prefix not in self._local_dirs:
            # Resolved once per run: the manager resolves symlinks for every path.
            probe = manager.get_captured_local_path(log_key, "out")
            directory = os.path.dirname(probe)
            same = probe == os.path.join(directory, f"{file_key}.out")
            if same:
                os.makedirs(directory, exist_ok=True)
            self._local_dirs[prefix] = directory if same else None
        directory = self._local_dirs[prefix]
        if directory is None or len(file_key) > 200:
            return (
                manager.get_captured_local_path(log_key, "out"),
                manager.get_captured_local_path(log_key, "err"),
                manager.complete_artifact_path(log_key),
            )
        return tuple(  # type: ignore[return-value]
            os.path.join(directory, f"{file_key}.{ext}") for ext in ("out", "err", "complete")
        )

    def _open_through_streams(self, log_key: Sequence[str]) -> StepStreams | None:
        manager = self.manager
        stack = ExitStack()
        try:
            if isinstance(manager, CloudStorageComputeLogManager):
                # Written locally, uploaded once both streams are closed (below):
                # the manager's own open_log_stream uploads and deletes the local files
                # when either stream closes.
                writer = manager.local_manager
                finish = _finish_cloud(manager, log_key)
            else:
                writer = manager
                finish = _no_finish
            out = stack.enter_context(_text_stream(writer, log_key, ComputeIOType.STDOUT))
            err = stack.enter_context(_text_stream(writer, log_key, ComputeIOType.STDERR))
            if out is None or err is None:
                stack.close()
                return None
        except BaseException:
            stack.close()
            raise

        def close() -> None:
            try:
                stack.close()
            finally:
                finish()

        return StepStreams(log_key, out, err, close, blocking_close=True)


@contextmanager
def _text_stream(manager: Any, log_key: Sequence[str], io_type: Any) -> Iterator[TextIO | None]:
    with manager.open_log_stream(log_key, io_type) as stream:
        if stream is None:
            yield None
        elif isinstance(stream, io.TextIOBase):
            yield stream  # type: ignore[misc]
        else:
            text = io.TextIOWrapper(stream, encoding="utf-8", write_through=True)
            try:
                yield text
            finally:
                text.flush()
                text.detach()


class _LazyFile:
    """A text file (append, UTF-8) opened on the first write: a step that never writes
    to stdout gets no stdout file (readers treat a missing file as empty)."""

    __slots__ = ("_file", "_path")

    def __init__(self, path: str) -> None:
        self._path = path
        self._file: TextIO | None = None

    def write(self, text: str) -> int:
        if self._file is None:
            self._file = open(self._path, "a", encoding="utf-8")  # noqa: SIM115
        return self._file.write(text)

    def flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def close(self) -> None:
        if self._file is not None:
            self._file.close()


def _touch(path: str) -> None:
    with open(path, "a", encoding="utf-8"):
        pass


def _finish_cloud(manager: Any, log_key: Sequence[str]) -> Callable[[], None]:
    def finish() -> None:
        # What the manager does after `capture_logs` (`_on_capture_complete`).
        _touch(manager.local_manager.complete_artifact_path(log_key))
        manager.upload_to_cloud_storage(log_key, ComputeIOType.STDOUT)
        manager.upload_to_cloud_storage(log_key, ComputeIOType.STDERR)
        with contextlib.suppress(Exception):
            manager.local_manager.delete_logs(log_key=log_key)

    return finish


def _no_finish() -> None:
    pass


__all__ = ["StepStorage", "StepStreams"]
