"""Retry policy: how many attempts, how long to wait between them, and for which errors.

The engine awaits the wait with `asyncio.sleep` on the loop; nothing here blocks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .errors import ConfigError
from .validation import non_negative_seconds, optional_seconds, positive_int


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Retry a failed node up to `max_attempts` attempts in total.

    The wait before attempt ``k + 1`` is ``delay * backoff ** (k - 1)``, capped at
    `max_delay`, then stretched by a random fraction up to `jitter` (0.1 = up to +10%).
    Only exceptions that are instances of `retry_on` are retried; a node timeout is a
    `NodeTimeoutError`, itself a `TimeoutError`.
    """

    max_attempts: int = 3
    delay: float = 0.0
    backoff: float = 1.0
    max_delay: float | None = None
    jitter: float = 0.0
    retry_on: tuple[type[BaseException], ...] = field(default=(Exception,))

    def __post_init__(self) -> None:
        positive_int(self.max_attempts, "RetryPolicy.max_attempts")
        non_negative_seconds(self.delay, "RetryPolicy.delay")
        optional_seconds(self.max_delay, "RetryPolicy.max_delay")
        non_negative_seconds(self.jitter, "RetryPolicy.jitter")
        if isinstance(self.backoff, bool) or not isinstance(self.backoff, int | float):
            raise ConfigError(f"RetryPolicy.backoff must be a number >= 1, got {self.backoff!r}")
        if not self.backoff >= 1 or self.backoff == float("inf"):
            raise ConfigError(
                f"RetryPolicy.backoff must be a finite number >= 1, got {self.backoff!r}"
            )
        retry_on = self.retry_on
        if isinstance(retry_on, type):
            retry_on = (retry_on,)
            object.__setattr__(self, "retry_on", retry_on)
        if not retry_on or not all(
            isinstance(t, type) and issubclass(t, BaseException) for t in retry_on
        ):
            raise ConfigError(
                f"RetryPolicy.retry_on must be exception classes, got {self.retry_on!r}"
            )

    @classmethod
    def coerce(cls, value: RetryPolicy | int | None, what: str) -> RetryPolicy | None:
        """`retries=2` means two retries after the first attempt (three attempts)."""
        if value is None or isinstance(value, RetryPolicy):
            return value
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(
                f"{what} must be a RetryPolicy or a number of retries >= 0, got {value!r}"
            )
        return None if value == 0 else cls(max_attempts=value + 1)

    def should_retry(self, error: BaseException, attempt: int) -> bool:
        """Whether attempt number `attempt` (1-based), which raised `error`, gets another."""
        return attempt < self.max_attempts and isinstance(error, self.retry_on)

    def wait_before(self, next_attempt: int) -> float:
        """Seconds to wait before attempt number `next_attempt` (2 or more)."""
        wait = self.delay * self.backoff ** max(0, next_attempt - 2)
        if self.max_delay is not None:
            wait = min(wait, self.max_delay)
        if self.jitter:
            wait += wait * random.uniform(0.0, self.jitter)
        return wait
