"""What the status watch costs the control loop: one tick of `Watch` (it builds the whole status document
and raises or clears the alarms) against one decision, at 10 … 1,000 chargers.

Run on purpose (`python bench/status_watch.py`), never as a test. The watch ticks in the control loop after
every decision, so its cost adds to the decision's within the tick budget; the decision on the same site is
the reference in the same run. The site: a three-phase service, one panel per 50 chargers, OCPP 1.6J
chargers all charging and reporting; a runtime that is not running (no I/O: the pushes have no driver to go
to), its store in a temporary directory.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.config import load_config
from gateway.domain import ChargerReading, ChargerStatus
from gateway.runtime.loop import Runtime
from gateway.runtime.status_view import build

NOW = datetime(2026, 12, 7, 18, 0, tzinfo=UTC)


def config_text(n: int, store: Path) -> str:
    panels = max(1, n // 50)
    lines = [
        "[site]", 'wiring = "three-phase-400/230"', f"service_breaker_a = {min(10000, max(250, 20 * n))}", "",
        "[store]", f'path = "{store}"', "",
    ]
    for p in range(panels):
        lines += ["[[circuits]]", f'id = "panel-{p}"', f"breaker_a = {max(100, 15 * (n // panels))}", ""]
    for i in range(n):
        lines += ["[[chargers]]", f'id = "cp-{i}"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"',
                  f'circuit = "panel-{i % panels}"', "max_a = 32", "fallback_a = 6", ""]
    return "\n".join(lines)


async def measure(n: int, rounds: int) -> tuple[float, float, float]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "site.toml"
        path.write_text(config_text(n, Path(tmp) / "gw.sqlite"))
        rt = Runtime(load_config(path), clock=lambda: NOW, serve_status=False)
        rt.readings = {f"cp-{i}": ChargerReading(f"cp-{i}", NOW, ChargerStatus.CHARGING,
                                                  current_a={"L1": 16.0, "L2": 16.0, "L3": 16.0},
                                                  energy_kwh=10.0 + i, applied_limit_a=32.0)
                       for i in range(n)}
        decide, watch, document = [], [], []
        for _ in range(rounds):
            started = time.perf_counter()
            await rt.decide_once()
            decide.append(time.perf_counter() - started)
            started = time.perf_counter()
            rt.watch.tick(NOW)
            watch.append(time.perf_counter() - started)
            started = time.perf_counter()
            build(rt, NOW)
            document.append(time.perf_counter() - started)
        return statistics.median(decide) * 1000, statistics.median(watch) * 1000, statistics.median(document) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="10,100,1000")
    parser.add_argument("--rounds", type=int, default=20)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # every push fails here (no driver): not what is measured
    print("| chargers | decision ms (reference) | watch tick ms | of it: document ms | watch / decision |")
    print("|---:|---:|---:|---:|---:|")
    for n in (int(s) for s in args.sizes.split(",")):
        decide, watch, document = asyncio.run(measure(n, args.rounds))
        print(f"| {n} | {decide:.2f} | {watch:.2f} | {document:.2f} | {watch / decide:.2f} |")


if __name__ == "__main__":
    main()
