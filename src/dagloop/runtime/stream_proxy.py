"""Route `sys.stdout` / `sys.stderr` writes by a context variable.

`installed()` replaces `sys.stdout` and `sys.stderr` with proxies (once per process,
reference-counted, so nested and concurrent users share one pair). A write goes to the
`Route` bound in the writer's context (`bound(route)`: per asyncio task, per greenlet,
per worker thread started with a copy of the context) or, when none is bound or the
route was closed, to the stream the proxy replaced. Nothing here knows about Dagster.

Only Python-level writes through `sys.stdout`/`sys.stderr` can be routed: a write to
the file descriptor (`os.write(1, ...)`, C extensions, subprocesses) or through
`sys.__stdout__` or `sys.stdout.buffer` goes where it always went.
"""

from __future__ import annotations

import contextvars
import io
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, TextIO

from dagloop.runtime.thread_interrupt import checkpoint

Write = Callable[[str], object]


class Route:
    """Where one context's stdout and stderr writes go until `close()`.

    `stdout`/`stderr` are text streams; `mirror_stdout`/`mirror_stderr` optionally get a
    copy of every write (e.g. the terminal). Writes are serialised by a lock (a step may
    write from several threads). With `flush_lines` a line is flushed when it ends;
    otherwise whoever reads along calls `flush_if_dirty()` now and then (a flush per
    line is a write system call per line).
    """

    __slots__ = ("_dirty", "_flush_lines", "_lock", "_mirrors", "_targets", "closed")

    def __init__(
        self,
        stdout: TextIO,
        stderr: TextIO,
        *,
        mirror_stdout: TextIO | None = None,
        mirror_stderr: TextIO | None = None,
        flush_lines: bool = True,
    ) -> None:
        self._targets = (stdout, stderr)
        self._mirrors = (mirror_stdout, mirror_stderr)
        self._flush_lines = flush_lines
        self._lock = threading.Lock()
        self._dirty = False
        self.closed = False

    def write(self, which: int, text: str, fallback: TextIO, *, mirrored: bool = True) -> None:
        """Write `text` to stream `which` (0 stdout, 1 stderr), and its mirror unless
        `mirrored` is False (the text was shown already); to `fallback` once closed."""
        with self._lock:
            if not self.closed:
                flush = self._flush_lines and "\n" in text
                target = self._targets[which]
                target.write(text)
                if flush:
                    target.flush()
                mirror = self._mirrors[which] if mirrored else None
                if mirror is not None:
                    try:
                        mirror.write(text)
                        if flush:
                            mirror.flush()
                    except (OSError, ValueError):
                        pass  # the terminal went away; the capture still has the line
                if not flush:
                    self._dirty = True
                return
        fallback.write(text)

    def flush(self, which: int) -> None:
        with self._lock:
            if not self.closed:
                self._targets[which].flush()

    def flush_if_dirty(self) -> None:
        """Flush what was written since the last flush (for readers following along)."""
        if not self._dirty:
            return
        with self._lock:
            if self.closed or not self._dirty:
                return
            self._dirty = False
            self._flush_all()

    def close(self) -> None:
        """Flush and stop routing; later writes from this context go to the fallback.
        The targets themselves are closed by their owner."""
        with self._lock:
            if self.closed:
                return
            self.closed = True
            self._flush_all()

    def _flush_all(self) -> None:
        """Flush every target and mirror (the caller holds the lock); one that went away
        is skipped."""
        for stream in (*self._targets, *self._mirrors):
            if stream is not None:
                with suppress(OSError, ValueError):
                    stream.flush()


_route: contextvars.ContextVar[Route | None] = contextvars.ContextVar(
    "dagloop_stream_route", default=None
)


@contextmanager
def bound(route: Route | None) -> Iterator[None]:
    """Route this context's writes (and those of tasks, greenlets and threads that copy
    it from now on) to `route` until the block ends."""
    token = _route.set(route)
    try:
        yield
    finally:
        _route.reset(token)


class StreamProxy(io.TextIOBase):
    """Stands in for `sys.stdout` or `sys.stderr`: routed writes go to the bound route,
    everything else (attributes, `fileno()`, `buffer`) is the replaced stream's."""

    def __init__(self, which: int, underlying: TextIO) -> None:
        super().__init__()
        self._which = which
        self.underlying = underlying

    # -- routed ------------------------------------------------------------------------

    def write(self, text: str) -> int:
        checkpoint()  # a print in a step being interrupted: stop at its next own line
        route = _route.get()
        if route is None:
            self.underlying.write(text)
        else:
            route.write(self._which, text, self.underlying)
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:  # type: ignore[override]
        for line in lines:
            self.write(line)

    def flush(self) -> None:
        route = _route.get()
        if route is not None:
            route.flush(self._which)
        self.underlying.flush()

    # -- the replaced stream's ---------------------------------------------------------

    def writable(self) -> bool:
        return True

    def readable(self) -> bool:
        return False

    def seekable(self) -> bool:
        return False

    def fileno(self) -> int:
        return self.underlying.fileno()

    def isatty(self) -> bool:
        return self.underlying.isatty()

    def close(self) -> None:
        # Closing sys.stdout must not close our routes; closing the replaced stream is
        # what the caller meant.
        self.underlying.close()

    def __del__(self) -> None:
        # IOBase.__del__ would close() the replaced stream when a proxy is collected.
        pass

    @property
    def closed(self) -> bool:
        return bool(self.underlying.closed)

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return str(getattr(self.underlying, "encoding", "utf-8"))

    @property
    def errors(self) -> str | None:  # type: ignore[override]
        return getattr(self.underlying, "errors", None)

    def __getattr__(self, name: str) -> Any:
        # buffer, mode, name, line_buffering, reconfigure, ...
        return getattr(self.underlying, name)

    def __repr__(self) -> str:
        return f"<dagloop StreamProxy for {self.underlying!r}>"


_install_lock = threading.Lock()
_installs = 0
_proxies: tuple[StreamProxy, StreamProxy] | None = None


def _install() -> None:
    global _installs, _proxies
    with _install_lock:
        _installs += 1
        if _proxies is not None and sys.stdout is _proxies[0] and sys.stderr is _proxies[1]:
            return
        out = sys.stdout
        err = sys.stderr
        _proxies = (
            out if isinstance(out, StreamProxy) else StreamProxy(0, out),
            err if isinstance(err, StreamProxy) else StreamProxy(1, err),
        )
        sys.stdout, sys.stderr = _proxies


def _uninstall() -> None:
    global _installs, _proxies
    with _install_lock:
        _installs -= 1
        if _installs > 0 or _proxies is None:
            return
        out, err = _proxies
        _proxies = None
        # Put back what we replaced, unless someone replaced us since (then theirs stays;
        # a proxy left behind only forwards, as nothing is bound any more).
        if sys.stdout is out:
            sys.stdout = out.underlying
        if sys.stderr is err:
            sys.stderr = err.underlying


@contextmanager
def installed() -> Iterator[None]:
    """`sys.stdout`/`sys.stderr` are routing proxies for the duration of the block.

    Reference-counted: the first user installs the pair, the last one restores the
    streams they replaced; overlapping users (concurrent runs in one process) share it.
    """
    _install()
    try:
        yield
    finally:
        _uninstall()


def is_installed() -> bool:
    return _proxies is not None
