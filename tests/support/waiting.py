"""The suite's waiting helpers: until a condition holds, and until a runtime told to stop has ended."""

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


async def stopped(task: asyncio.Task[None], timeout_s: float = 15.0) -> None:
    """Wait for `task` (a runtime told to stop) to end. Past `timeout_s`, fail naming every task still running
    on the loop and the line each is waiting at, then cancel it: a slow stop says where it is stuck."""
    try:
        await asyncio.wait_for(asyncio.shield(task), timeout_s)
    except TimeoutError:
        here = asyncio.current_task()
        stuck = []
        for other in asyncio.all_tasks():
            if other is here or other.done():
                continue
            frames = other.get_stack(limit=1)
            where = f"{frames[0].f_code.co_filename}:{frames[0].f_lineno}" if frames else "?"
            stuck.append(f"{other.get_name()} at {where}")
        task.cancel()
        await asyncio.wait({task}, timeout=5.0)
        raise AssertionError(f"not stopped within {timeout_s:g} s; still running: {'; '.join(sorted(stuck))}") from None
