"""The control loop's writes to the store, off the control path: the loop hands a write over and goes on.

One task runs the writes one at a time, in the order they were handed over. A write is keyed by what it
writes ("ledger", "telemetry", "limits", "operator" …): handing over a key already waiting replaces that
write in place (each write takes what is pending when it runs, so the latest one covers the earlier), which
keeps the queue bounded by the number of keys; the data waiting behind them is bounded by its owner.

A write that fails because of the store (locked by another process, disk full, an I/O error) stays at the
head and is tried again after a backoff (0.5 s doubling to 5 s) until it works; the failure goes into
`WriteHealth` (the runtime raises the `store.write` alarm from it) and the writes behind wait. A write that
fails because of a bug is logged with its traceback and dropped: it would fail for ever.

`submit` returns a future that says how the next attempt of that write went: None when it is stored, or
one line saying why not (the status endpoint tells an operator whose change is not stored yet).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from typing import Any

from gateway.store.health import WriteHealth, describe, is_store_fault
from gateway.waking import within

log = logging.getLogger("gateway.store")

Job = Callable[[], Awaitable[object]]


class StoreWriter:
    def __init__(self, health: WriteHealth, *, retry_initial_s: float = 0.5, retry_max_s: float = 5.0) -> None:
        self.health = health
        self.retry_initial_s = retry_initial_s
        self.retry_max_s = retry_max_s
        self._jobs: OrderedDict[str, Job] = OrderedDict()
        self._waiters: dict[str, list[asyncio.Future[str | None]]] = {}
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        self.running: str | None = None  # the key being written now
        self.running_since: float | None = None  # monotonic
        self.written = 0
        self.failed_attempts = 0
        self.unwritten: list[str] = []  # keys given up at shutdown
        self._closing = False

    def submit(self, key: str, job: Job) -> asyncio.Future[str | None]:
        """Hand a write over; never waits. A write of the same key still waiting is replaced in place."""
        self._jobs[key] = job  # a key already waiting keeps its place
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(future)
        self._idle.clear()
        self._wake.set()
        return future

    def pending(self) -> list[str]:
        """The keys waiting (the one being written first)."""
        keys = list(self._jobs)
        return [self.running, *keys] if self.running is not None and self.running not in keys else keys

    def stuck_for(self) -> float:
        """How long the write under way has taken (0 when none is)."""
        return 0.0 if self.running_since is None else time.monotonic() - self.running_since

    async def run(self) -> None:
        """Until `finish()` (or cancellation): write what is handed over, retrying store faults with backoff."""
        delay = self.retry_initial_s
        while True:
            if not self._jobs:
                self._idle.set()
                if self._closing:
                    return
                self._wake.clear()
                await self._wake.wait()
                continue
            key, job = next(iter(self._jobs.items()))
            del self._jobs[key]
            waiters = self._waiters.pop(key, [])
            ok = await self._attempt(key, job, waiters)
            if ok is None and self._closing:
                self.unwritten.append(key)  # one last try was all there was time for
            elif ok is None:  # a store fault: back to the head (unless handed over again meanwhile) and wait
                if key not in self._jobs:
                    self._jobs[key] = job
                self._jobs.move_to_end(key, last=False)
                self._wake.clear()
                with contextlib.suppress(TimeoutError):  # `finish()` cuts the wait short
                    async with asyncio.timeout(delay):
                        await self._wake.wait()
                delay = min(self.retry_max_s, delay * 2)
            else:
                delay = self.retry_initial_s

    async def _attempt(self, key: str, job: Job, waiters: list[asyncio.Future[str | None]]) -> bool | None:
        """True: written; False: a bug, dropped; None: a store fault, to be tried again."""
        self.running, self.running_since = key, time.monotonic()
        try:
            await job()
        except asyncio.CancelledError:
            for w in waiters:
                if not w.done():
                    w.set_result("the gateway is stopping")
            raise
        except Exception as exc:
            self.failed_attempts += 1
            why = describe(exc)
            for w in waiters:
                if not w.done():
                    w.set_result(why)
            if is_store_fault(exc):
                self.health.failed(key, exc)
                return None
            log.exception("store write=%s failed with a bug; dropped", key)
            return False
        finally:
            self.running, self.running_since = None, None
        self.written += 1
        self.health.ok(key)
        for w in waiters:
            if not w.done():
                w.set_result(None)
        return True

    async def finish(self, task: asyncio.Task[None], timeout_s: float) -> bool:
        """At shutdown, with `task` running `run()`: let the write under way end (a write cut off in its
        thread could be written twice), try every waiting write once more, then stop. Within `timeout_s`
        (then `task` is cancelled); True when everything handed over is stored."""
        self._closing = True
        self._wake.set()
        try:
            await within(asyncio.shield(task), timeout_s)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        self.unwritten.extend(k for k in self._jobs if k not in self.unwritten)
        self._jobs.clear()
        for waiters in self._waiters.values():
            for w in waiters:
                if not w.done():
                    w.set_result("the gateway stopped before it was stored")
        self._waiters.clear()
        return not self.unwritten

    async def idle(self) -> None:
        """Until nothing is waiting (tests)."""
        await self._idle.wait()


async def write_held(held: deque[Any], write: Callable[[list[Any]], object]) -> None:
    """Write what `held` holds now in one call (in a worker thread); on success take exactly those out: what
    came in meanwhile stays for the next write, and on failure all stay for the retry. `held` is a bounded
    deque owned by the event loop: while the store is down for long its oldest items go."""
    batch = list(held)
    if not batch:
        return
    await asyncio.to_thread(write, batch)
    written = {id(item) for item in batch}
    while held and id(held[0]) in written:
        held.popleft()
