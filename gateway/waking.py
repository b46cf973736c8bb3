"""Waits that end: `Wakeable.sleep(s)`, a wait between rounds that `wake()` cuts short (shared by the OpenADR
2.0b and 3 VENs: an operator's opt or a notification wakes them to poll at once), and `within(aw, s)`, an
await with a time limit.

Both are built on `asyncio.timeout`, never `asyncio.wait_for`: on Python 3.11 `wait_for` can swallow a
cancellation (the stop) that arrives just as what it waits on completes (CPython gh-86296, fixed in 3.12
by rebuilding `wait_for` on `asyncio.timeout`). The task then goes on as if it had not been stopped.
`tests/test_waking.py` shows the difference; no module of the gateway calls `wait_for`.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")


async def within(aw: Awaitable[T], seconds: float) -> T:
    """`await aw`, or `TimeoutError` after `seconds` (what is awaited is cancelled then, as with
    `wait_for`; wrap it in `asyncio.shield` to let it run on). A cancellation of the caller is never lost."""
    async with asyncio.timeout(seconds):
        return await aw


class Wakeable:
    def __init__(self) -> None:
        self._event = asyncio.Event()

    def wake(self) -> None:
        """End the current (or the next) sleep now."""
        self._event.set()

    async def sleep(self, seconds: float) -> None:
        self._event.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._event.wait()
