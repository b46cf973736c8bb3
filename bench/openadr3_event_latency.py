"""OpenADR 3 event latency: from the VTN's business logic creating an event to the event being stored and
handed to the schedule (the sink), by webhook notification and by polling (the reference, poll every 1 s).

Run on purpose (`python bench/openadr3_event_latency.py [--events 40] [--version 3.1.0]`), never as a
test. The simulated VTN (gateway.sim.vtn3) runs in this process on 127.0.0.1, so its work (JSON, schema
checks of what it answers, the notification POST) shares the CPU and the event loop with the VEN; the VEN
writes a real SQLite file (synchronous=FULL). One event is created every 300 ms; each is timed from
`create_event` returning to `events_changed` naming it.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make `gateway.*` importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from gateway.domain import Event, OptState
from gateway.openadr3.settings import Oadr3Settings
from gateway.openadr3.ven import Oadr3Ven
from gateway.sim.vtn3 import SimVtn3, interval, period
from gateway.store.vtn3 import Oadr3Store


class Sink:
    def __init__(self) -> None:
        self.seen: dict[str, float] = {}

    def events_changed(self, events: Sequence[Event], now: datetime) -> None:
        at = time.perf_counter()
        for e in events:
            self.seen.setdefault(e.event_id, at)

    def opt_of(self, event_id: str) -> OptState:
        return OptState.NONE


async def run(mode: str, version: str, count: int) -> list[float]:
    vtn = SimVtn3(version=version, notify=mode == "webhook")
    await vtn.start()
    folder = Path(tempfile.mkdtemp(prefix="oadr3-bench-"))
    settings = Oadr3Settings(
        url=vtn.url, version=version, ven_name="bench-site", client_id="ven-client",  # type: ignore[arg-type]
        client_secret="ven-secret", token_url=f"{vtn.url}/auth/token" if version == "3.0.1" else None,
        poll_s=60.0 if mode == "webhook" else 1.0, subscribe=mode == "webhook", charger_ids=("cp-1",),
        resources={"cp-1": ("cp-1",)})
    sink = Sink()
    ven = Oadr3Ven(settings, Oadr3Store.open(folder / "gw.sqlite"), sink=sink)
    program = vtn.create_program("bench")
    task = asyncio.create_task(ven.run())
    try:
        await asyncio.wait_for(ven.enrolled.wait(), 10)
        while mode == "webhook" and not vtn.objects["subscriptions"]:
            await asyncio.sleep(0.05)
        created: dict[str, float] = {}
        for _ in range(count):
            start = datetime.now(UTC) + timedelta(minutes=5)
            ev = vtn.create_event(program["id"], [interval(0, "SIMPLE", 1)],
                                  intervalPeriod=period(start, timedelta(minutes=30)))
            created[ev["id"]] = time.perf_counter()
            await asyncio.sleep(0.3)
        deadline = time.perf_counter() + 5
        while set(created) - set(sink.seen) and time.perf_counter() < deadline:
            await asyncio.sleep(0.05)
        return [sink.seen[k] - t for k, t in created.items() if k in sink.seen]
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await vtn.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=40)
    parser.add_argument("--version", choices=("3.0.1", "3.1.0"), default="3.1.0")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    print(f"OpenADR {args.version}: event created at the VTN → stored and handed to the schedule ({args.events} "
          "events, one every 300 ms)")
    print(f"{'path':<24} {'events':>6} {'median ms':>10} {'p95 ms':>8} {'max ms':>8}")
    for mode, label in (("polling", "polling every 1 s (ref)"), ("webhook", "webhook notification")):
        samples = sorted(x * 1000 for x in asyncio.run(run(mode, args.version, args.events)))
        p95 = samples[max(0, round(0.95 * len(samples)) - 1)] if samples else float("nan")
        print(f"{label:<24} {len(samples):>6} {statistics.median(samples):>10.1f} {p95:>8.1f} {max(samples):>8.1f}")


if __name__ == "__main__":
    main()
