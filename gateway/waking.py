"""A wait between rounds that can be cut short: `sleep(s)` until `s` passes or `wake()` is called. Shared by
the OpenADR 2.0b and 3 VENs (an operator's opt or a notification wakes them to poll at once).

`asyncio.timeout`, not `wait_for`: on 3.11 `wait_for` can swallow a cancel (the stop) that arrives as the
event is set, and the waiting task would then never stop.
"""

from __future__ import annotations

import asyncio
import contextlib


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
