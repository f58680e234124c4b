"""Exponential backoff with jitter, and the API's Retry-After taking precedence."""

from __future__ import annotations

import random


def retry_delay(
    attempt: int, *, base_s: float, max_s: float, retry_after_s: float | None = None
) -> float:
    """Seconds to wait before attempt `attempt + 1`.

    Grows as base * 2^(attempt-1), capped at max_s, then jittered down by up to half so a
    burst of failures does not come back as a burst. A Retry-After from the API is a floor:
    never sooner than it says.

    Examples:
        >>> 1.0 <= retry_delay(1, base_s=2, max_s=300) <= 2.0
        True
        >>> retry_delay(1, base_s=2, max_s=300, retry_after_s=30) >= 30
        True
    """
    ceiling = min(max_s, base_s * 2 ** max(attempt - 1, 0))
    delay = ceiling * random.uniform(0.5, 1.0)
    if retry_after_s is not None:
        delay = max(delay, retry_after_s)
    return float(delay)
