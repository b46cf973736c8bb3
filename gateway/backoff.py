"""How long a VEN waits before it tries the VTN again, pure (the random draw is a parameter): exponential
backoff with full jitter, and while the VTN is unreachable a ceiling low enough that a VTN which comes
back is reached within `return_within_s` even if it returns just as an attempt starts to hang. Shared by
the OpenADR 2.0b and 3 VENs."""

from __future__ import annotations

import random


def backoff_delay(failures: int, initial: float, maximum: float, rng: random.Random) -> float:
    """Full jitter: uniform in [initial/2, min(max, initial·2^(n-1))]; never zero, never above max."""
    ceiling = min(maximum, initial * (2 ** min(failures - 1, 30)))
    return rng.uniform(min(initial / 2, ceiling), ceiling)


def unreachable_delay(failures: int, initial: float, maximum: float, *, return_within_s: float,
                      request_timeout_s: float, rng: random.Random) -> float:
    """`backoff_delay` with its ceiling lowered so that the next attempt (and its timeout) ends within
    `return_within_s`; never below `initial` (or `maximum` if that is lower)."""
    ceiling = min(maximum, return_within_s - request_timeout_s)
    ceiling = max(ceiling, min(initial, maximum))
    return backoff_delay(failures, initial, ceiling, rng)
