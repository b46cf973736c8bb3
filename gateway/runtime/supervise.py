"""Keep one adapter task alive: run it, and when it crashes log why and start it again after a backoff.

The backoff doubles from `initial_s` to `max_s` and resets once the task has run for a while without
failing, so a flapping peer does not spin the CPU and a one-off crash is retried quickly. Cancellation
(shutdown) is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable

log = logging.getLogger("gateway.runtime")

HEALTHY_AFTER_S = 30.0  # a task that ran this long before failing starts again from the short backoff


async def supervised(
    name: str,
    start: Callable[[], Awaitable[object]],
    *,
    initial_s: float = 0.5,
    max_s: float = 30.0,
    restarts: dict[str, int] | None = None,
) -> None:
    delay = initial_s
    while True:
        began = time.monotonic()
        try:
            await start()
            log.warning("adapter=%s ended on its own; starting it again in %.1fs", name, delay)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("adapter=%s crashed (%s); restart in %.1fs", name, type(exc).__name__, delay)
        if restarts is not None:
            restarts[name] = restarts.get(name, 0) + 1
        if time.monotonic() - began > HEALTHY_AFTER_S:
            delay = initial_s
        await asyncio.sleep(delay)
        delay = min(max_s, delay * 2)
