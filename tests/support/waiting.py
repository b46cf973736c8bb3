"""The one polling helper of the suite: wait, on the running event loop, until a condition holds."""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable


async def until(cond: Callable[[], object], timeout_s: float = 5.0,
                what: str = "condition not met in time", *, every_s: float = 0.02) -> float:
    """Poll `cond` (a plain or an async predicate; any truthy answer counts) every `every_s` until it holds;
    how long that took. Fails with `what` once `timeout_s` has passed without it."""
    loop = asyncio.get_running_loop()
    began = loop.time()
    while True:
        result = cond()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return loop.time() - began
        if loop.time() - began > timeout_s:
            raise AssertionError(f"{what} (waited {timeout_s} s)")
        await asyncio.sleep(every_s)
