"""When to try a request again and how long to wait first: exponential back-off with jitter, Retry-After."""

from __future__ import annotations

import email.utils
import math
import time
from dataclasses import dataclass

RETRY_STATUSES = frozenset({408, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try: ``tries`` per request, pauses from ``first_delay`` doubling up to ``max_delay``."""

    tries: int = 5
    first_delay: float = 1.0
    max_delay: float = 120.0
    timeout: float = 30.0


def parse_retry_after(value: str | None, now: float | None = None) -> float | None:
    """Seconds to wait from a Retry-After header (seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        pass
    else:
        return max(seconds, 0.0) if math.isfinite(seconds) else None
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(when.timestamp() - (time.time() if now is None else now), 0.0)


def backoff_delay(policy: RetryPolicy, failures: int, retry_after: float | None = None,
                  jitter: float = 1.0) -> float:
    """Pause after the ``failures``-th failed try: ``first_delay * 2**(failures-1)`` scaled by ``jitter``
    (0.5–1), at least ``retry_after``, at most ``max_delay``."""
    delay = policy.first_delay * 2.0 ** (failures - 1) * jitter
    if retry_after is not None:
        delay = max(delay, retry_after)
    return min(delay, policy.max_delay)


def retryable(status: int) -> bool:
    return status in RETRY_STATUSES or status >= 500
