"""The control loop's store writer: writes go in order and never make the caller wait; a key handed over
again replaces the write still waiting; a store fault (a lock, a full disk) is retried with backoff at the
head and reported in WriteHealth until it works; a bug is dropped; the future says how it went."""

from __future__ import annotations

import asyncio
import sqlite3

from gateway.store.health import WriteHealth
from gateway.store.writer import Job, StoreWriter


def writer() -> StoreWriter:
    return StoreWriter(WriteHealth(), retry_initial_s=0.01, retry_max_s=0.05)


async def test_writes_run_in_order_and_a_waiting_key_is_replaced_in_place() -> None:
    w = writer()
    done: list[str] = []

    def job(name: str) -> Job:
        async def run() -> None:
            done.append(name)
        return run

    w.submit("a", job("a1"))
    w.submit("b", job("b"))
    w.submit("a", job("a2"))  # replaces a1, keeps a's place before b
    task = asyncio.create_task(w.run())
    try:
        await asyncio.wait_for(w.idle(), 2)
        assert done == ["a2", "b"]
    finally:
        task.cancel()


async def test_a_store_fault_is_retried_at_the_head_and_reported_until_it_works() -> None:
    w = writer()
    attempts = {"n": 0}
    order: list[str] = []

    async def flaky() -> None:
        attempts["n"] += 1
        if attempts["n"] < 4:
            raise sqlite3.OperationalError("database or disk is full")
        order.append("flaky")

    async def after() -> None:
        order.append("after")

    first = w.submit("telemetry", flaky)
    w.submit("ledger", after)
    task = asyncio.create_task(w.run())
    try:
        assert await asyncio.wait_for(first, 2) == "database or disk is full", "the first attempt's outcome"
        trouble = w.health.trouble()
        assert trouble is not None and trouble.whats == ("telemetry",) and not trouble.precious
        await asyncio.wait_for(w.idle(), 2)
        assert order == ["flaky", "after"], "the failed write stays first"
        assert attempts["n"] == 4 and w.health.trouble() is None
    finally:
        task.cancel()


async def test_an_operator_write_that_fails_is_precious_and_a_bug_is_dropped() -> None:
    w = writer()

    async def full() -> None:
        raise sqlite3.OperationalError("database is locked")

    async def bug() -> None:
        raise KeyError("no such thing")

    task = asyncio.create_task(w.run())
    assert await asyncio.wait_for(w.submit("bug", bug), 2) == "'no such thing'"
    assert "bug" not in w.pending() and w.health.trouble() is None
    assert await asyncio.wait_for(w.submit("operator", full), 2) == "database is locked"
    trouble = w.health.trouble()
    assert trouble is not None and trouble.precious
    # At shutdown: one more try within the time given, then the writer stops.
    assert await w.finish(task, 1.0) is False
    assert w.unwritten == ["operator"] and task.done() and w.pending() == []


async def test_submit_never_waits_for_a_write_under_way() -> None:
    w = writer()
    release = asyncio.Event()

    async def slow() -> None:
        await release.wait()

    task = asyncio.create_task(w.run())
    try:
        w.submit("slow", slow)
        await asyncio.sleep(0.05)
        assert w.running == "slow" and w.stuck_for() > 0
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for _ in range(1000):
            w.submit("telemetry", slow)
        assert loop.time() - t0 < 0.5 and w.pending() == ["slow", "telemetry"]
        release.set()
        await asyncio.wait_for(w.idle(), 2)
    finally:
        task.cancel()
