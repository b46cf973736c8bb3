"""An adapter task that crashes is logged and started again, with a growing but bounded delay."""

from __future__ import annotations

import asyncio
import itertools
import logging

import pytest

from gateway.runtime.supervise import cancel_all, supervised


async def test_a_crashing_adapter_is_restarted_until_cancelled(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.ERROR, logger="gateway.runtime")
    runs: list[float] = []
    restarts: dict[str, int] = {}
    loop = asyncio.get_running_loop()

    async def flaky() -> None:
        runs.append(loop.time())
        if len(runs) < 4:
            raise ConnectionError("peer went away")
        await asyncio.sleep(3600)  # healthy from the fourth start on

    task = asyncio.create_task(supervised("flaky", flaky, initial_s=0.01, max_s=0.04, restarts=restarts))
    while len(runs) < 4:
        await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert restarts == {"flaky": 3}
    gaps = [b - a for a, b in itertools.pairwise(runs)]
    assert gaps[0] >= 0.01 and gaps[2] >= 0.04 - 1e-3  # doubled, then held at the maximum
    assert sum("adapter=flaky crashed (ConnectionError)" in r.getMessage() for r in caplog.records) == 3


async def test_a_task_that_swallows_its_cancellation_is_cancelled_again(caplog: pytest.LogCaptureFixture) -> None:
    # What Python 3.11's asyncio.wait_for can do when a cancellation lands as its inner future completes
    # (CPython gh-86296): the task goes on. A shutdown that cancelled once would wait for it forever.
    caplog.set_level(logging.WARNING, logger="gateway.runtime")
    swallowed = 0

    async def stubborn() -> None:
        nonlocal swallowed
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed += 1  # the first cancellation is lost

    async def plain() -> None:
        await asyncio.sleep(3600)

    tasks = [asyncio.create_task(stubborn(), name="stubborn"), asyncio.create_task(plain(), name="plain")]
    await asyncio.sleep(0)
    await asyncio.wait_for(cancel_all(tasks, again_after_s=0.05), 5)
    assert all(t.cancelled() for t in tasks) and swallowed == 1
    assert [r.getMessage() for r in caplog.records] == [
        "shutdown: task stubborn went on after it was cancelled; cancelling it again"]
