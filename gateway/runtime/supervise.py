"""The runtime's tasks: keep one adapter alive (`supervised`), and end them all at a stop (`cancel_all`).

`supervised` runs an adapter, and when it crashes logs why and starts it again after a backoff.

The backoff doubles from `initial_s` to `max_s` and resets once the task has run for a while without
failing, so a flapping peer does not spin the CPU and a one-off crash is retried quickly. Cancellation
(shutdown) is never swallowed.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

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


async def cancel_all(tasks: Iterable[asyncio.Task[Any]], again_after_s: float = 1.0) -> None:
    """Cancel every task and wait until each has ended. On Python 3.11 `asyncio.wait_for` can swallow a
    cancellation that lands just as the future it waits on completes (CPython gh-86296, fixed in 3.12): the
    task goes on as if nothing happened, and a shutdown waiting for it would wait forever. The gateway's
    own code waits with `gateway.waking.within` instead, but the libraries under the drivers still call
    `wait_for` (ocpp's `ChargePoint.call`, pymodbus's connect and transactions). So a task still running
    `again_after_s` later is cancelled again, and said once."""
    pending = {t for t in tasks if not t.done()}
    for task in pending:
        task.cancel()
    said: set[asyncio.Task[Any]] = set()
    while pending:
        _, pending = await asyncio.wait(pending, timeout=again_after_s)
        for task in pending:
            if task not in said:
                said.add(task)
                log.warning("shutdown: task %s went on after it was cancelled; cancelling it again", task.get_name())
            task.cancel()
