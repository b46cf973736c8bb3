"""OpenADR event latency: from an oadrDistributeEvent's bytes arriving at the VEN to the event being in
SQLite (the moment the VEN may answer the VTN and the schedule may use it).

Run on purpose (`python bench/openadr_event_latency.py [--events 200]`), never as a test. A real
openleadr VTN (gateway.sim.vtn) on 127.0.0.1 runs in a child process (its own event loop and CPU time,
as a utility's server would) and adds one new event every 100 ms; it keeps listing only the last few,
so most messages also carry an implied cancel, written in the same transaction. Timing starts
when the poll response body has been read and ends when the store transaction has committed; it covers
the XML guard, schema validation, openleadr parsing, translation, the lifecycle rules, the opt decision
and the SQLite write (fsync included with synchronous=FULL). Reported for FULL and NORMAL.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import multiprocessing
import multiprocessing.connection
import random
import statistics
import tempfile
import time
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.domain import Event
from gateway.openadr.ven import Ven
from gateway.openadr.wire import VtnLink
from gateway.sim.vtn import SimVtn
from gateway.store.db import Synchronous
from gateway.store.vtn import VenStore

KEEP = 5  # events the VTN keeps listing


class TimedLink(VtnLink):
    arrived: float | None = None

    async def post(self, service: str, body: bytes) -> bytes:
        raw = await super().post(service, body)
        if service == "OadrPoll" and b"oadrDistributeEvent" in raw:
            self.arrived = time.perf_counter()
        return raw


class TimedStore(VenStore):
    link: TimedLink
    samples: list[float]

    seen: set[str]
    commits: list[float]

    def save_events(self, events: Iterable[Event], now: datetime, reasons: dict[str, str] | None = None) -> None:
        events = list(events)
        began = time.perf_counter()
        super().save_events(events, now, reasons)
        self.commits.append(time.perf_counter() - began)
        if self.link.arrived is not None:
            took = time.perf_counter() - self.link.arrived
            new = [e.event_id for e in events if e.event_id not in self.seen]
            self.seen.update(new)
            self.samples.extend(took for _ in new)  # one sample per new event, however they were batched


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def vtn_process(n: int, port_out: multiprocessing.connection.Connection) -> None:
    logging.getLogger("openleadr").setLevel(logging.CRITICAL)

    async def serve() -> None:
        vtn = SimVtn()
        await vtn.start()
        port_out.send(vtn.url)
        while "ven-1" not in vtn.vens:
            await asyncio.sleep(0.01)
        start = datetime.now(UTC) + timedelta(hours=1)
        for i in range(n):
            vtn.add_event("ven-1", [("LOAD_DISPATCH", "setpoint", [40.0, 30.0])], start=start,
                          start_after=timedelta(minutes=5), event_id=f"bench-{i}")
            for old in vtn.event_ids("ven-1")[:-KEEP]:
                vtn.drop_event("ven-1", old)
            await asyncio.sleep(0.1)
        await asyncio.sleep(3600)

    asyncio.run(serve())


async def run(n: int, synchronous: Synchronous, directory: Path) -> tuple[list[float], list[float]]:
    receiver, sender = multiprocessing.Pipe(duplex=False)
    child = multiprocessing.Process(target=vtn_process, args=(n, sender), daemon=True)
    child.start()
    url = receiver.recv()
    config = VtnSection(url=url, ven_name="bench", allow_plain_http=True, poll_s=0.01)
    link = TimedLink(config)
    store = TimedStore.open(directory / f"bench-{synchronous}.sqlite", synchronous=synchronous)
    store.link = link
    store.samples = []
    store.seen = set()
    store.commits = []
    ven = Ven(config, OpenAdrSection(), store, link=link, rng=random.Random(1))
    task = asyncio.create_task(ven.run())
    try:
        deadline = time.monotonic() + 0.1 * n + 30
        while len(store.samples) < n and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        return store.samples[:n], store.commits
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        store.close()
        child.kill()
        child.join(5)


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    logging.getLogger("openleadr").setLevel(logging.CRITICAL)  # it sets INFO on itself and logs whole payloads
    with tempfile.TemporaryDirectory() as tmp:
        print(f"{'synchronous':<12} {'events':>6} {'median ms':>10} {'p99 ms':>8} {'max ms':>8}"
              f" {'commit median ms':>17} {'commit p99 ms':>14}")
        modes: tuple[Synchronous, ...] = ("FULL", "NORMAL")
        for mode in modes:
            samples, commits = await run(args.events, mode, Path(tmp))
            ms = [s * 1000 for s in samples]
            cms = [c * 1000 for c in commits]
            print(f"{mode:<12} {len(ms):>6} {statistics.median(ms):>10.2f} {pct(ms, 99):>8.2f} {max(ms):>8.2f}"
                  f" {statistics.median(cms):>17.2f} {pct(cms, 99):>14.2f}")


if __name__ == "__main__":
    asyncio.run(main())
