"""Modbus timing on one machine: limit-to-draw latency per charger model, and the poll rate sustained
with 20 chargers and 2 meters.

Run on purpose (`python bench/modbus_latency.py`), never as a test. Part 1 runs the simulated chargers
in this process so the moment a new setpoint lands in the charger is known exactly: it times
`ModbusCharger.apply` from the call to (a) the simulated charger drawing the new current, (b) the
acknowledgement after read-back. Part 2 starts 20 chargers and 2 meters in a child process (their own
event loop, as separate devices would be) and runs the gateway side here: the chargers' readings loop at
1 s with a new limit for every charger each second, and both meters polled at 250 ms, for a while; it
reports the meters' achieved rate and the spread of their poll intervals.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import random
import statistics
import sys
import time

from gateway.modbus.charger import ModbusCharger, ModbusChargers
from gateway.modbus.link import ModbusLink
from gateway.modbus.maps import load_map
from gateway.modbus.meter import ModbusMeter
from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter

CHARGER_MODELS = ["abb-terra-ac", "alfen-ng9xx", "generic-charger", "keba-p30", "webasto-next"]
METER_MODELS = ["eastron-sdm630", "carlo-gavazzi-em24"]


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def latency(rounds: int) -> None:
    print(f"## limit -> simulated charger drawing it ({rounds} changes per model, in-process sims)")
    print(f"{'model':18} {'draw p50 ms':>11} {'draw p95 ms':>11} {'draw max ms':>11} {'ack p50 ms':>10} "
          f"{'ack p95 ms':>10}")
    rng = random.Random(6)
    for model in CHARGER_MODELS:
        sim = SimCharger(model, rating_a=32.0)
        port = await sim.start()
        sim.plug_in(ev_max_a=32.0)
        charger = ModbusCharger("cp", load_map(model), ModbusLink("127.0.0.1", port, timeout_s=2.0), max_a=32.0)
        await charger.apply(6.0)
        draw, ack = [], []
        last = 6.0
        for _ in range(rounds):
            amps = last
            while amps == last:
                amps = float(rng.randint(6, 32))
            last = amps
            t0 = time.monotonic()
            result = await charger.apply(amps)
            t1 = time.monotonic()
            assert result.accepted, result.detail
            assert sim.drawing_a == amps and sim.setpoint_changed_at is not None
            draw.append((sim.setpoint_changed_at - t0) * 1000)
            ack.append((t1 - t0) * 1000)
        await charger.link.close()
        await sim.stop()
        print(f"{model:18} {pct(draw, 50):11.2f} {pct(draw, 95):11.2f} {max(draw):11.2f} "
              f"{pct(ack, 50):10.2f} {pct(ack, 95):10.2f}")


async def serve(chargers: int, meters: int) -> None:
    """Child process: the simulated devices; prints their ports as one JSON line, runs until stdin closes."""
    sims: list[SimCharger | SimMeter] = []
    ports: dict[str, list[list[object]]] = {"chargers": [], "meters": []}
    for i in range(chargers):
        model = CHARGER_MODELS[i % len(CHARGER_MODELS)]
        sim = SimCharger(model)
        sim.plug_in(ev_max_a=32.0)
        sims.append(sim)
        ports["chargers"].append([model, await sim.start()])
    for i in range(meters):
        model = METER_MODELS[i % len(METER_MODELS)]
        meter = SimMeter(model)
        meter.set_load(L1=40.0, L2=35.0, L3=-5.0)
        sims.append(meter)
        ports["meters"].append([model, await meter.start()])
    print(json.dumps(ports), flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    for s in sims:
        await s.stop()


async def load(seconds: float, chargers: int, meters: int, meter_poll_s: float) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--serve", str(chargers), str(meters),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None and proc.stdin is not None
    ports = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
    driver = ModbusChargers(
        [ModbusCharger(f"cp-{i}", load_map(model), ModbusLink("127.0.0.1", port, timeout_s=2.0), max_a=32.0)
         for i, (model, port) in enumerate(ports["chargers"])],
        poll_s=1.0,
    )
    polled = [
        ModbusMeter(f"m-{i}", load_map(model), ModbusLink("127.0.0.1", port, timeout_s=2.0), poll_s=meter_poll_s)
        for i, (model, port) in enumerate(ports["meters"])
    ]
    stamps: dict[str, list[float]] = {m.id: [] for m in polled}
    readings = 0
    acks: list[float] = []

    async def run_meter(meter: ModbusMeter) -> None:
        async for _ in meter.measurements():
            stamps[meter.id].append(time.monotonic())

    async def run_chargers() -> None:
        nonlocal readings
        async for _ in driver.readings():
            readings += 1

    async def push_limits() -> None:
        rng = random.Random(1)
        while True:
            limits = {cid: float(rng.randint(6, 32)) for cid in driver.chargers}
            t0 = time.monotonic()
            result = await driver.apply_limits(limits, "bench")
            acks.append((time.monotonic() - t0) * 1000)
            assert all(a.accepted for a in result)
            await asyncio.sleep(1.0)

    tasks = [asyncio.create_task(run_meter(m)) for m in polled]
    tasks += [asyncio.create_task(run_chargers()), asyncio.create_task(push_limits())]
    await asyncio.sleep(seconds)
    for t in tasks:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    proc.stdin.close()
    await asyncio.wait_for(proc.wait(), 30)

    print(f"\n## {chargers} chargers + {meters} meters, {seconds:g} s, sims in a child process")
    print(f"charger readings: {readings / seconds:.1f}/s (target {chargers}/s); limits pushed to all "
          f"{chargers} every 1 s: p50 {pct(acks, 50):.1f} ms, max {max(acks):.1f} ms per round (with read-back)")
    print(f"{'meter':6} {'target/s':>8} {'achieved/s':>10} {'interval p50 ms':>15} {'p95 ms':>7} {'max ms':>7}")
    for m in polled:
        s = stamps[m.id]
        gaps = [(b - a) * 1000 for a, b in itertools.pairwise(s)]
        rate = (len(s) - 1) / (s[-1] - s[0]) if len(s) > 1 else 0.0
        print(f"{m.id:6} {1 / m.poll_s:8.1f} {rate:10.2f} {statistics.median(gaps):15.1f} {pct(gaps, 95):7.1f} "
              f"{max(gaps):7.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--chargers", type=int, default=20)
    parser.add_argument("--meters", type=int, default=2)
    parser.add_argument("--meter-poll", type=float, default=0.25)
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        asyncio.run(serve(*args.serve))
        return
    asyncio.run(latency(args.rounds))
    asyncio.run(load(args.seconds, args.chargers, args.meters, args.meter_poll))


if __name__ == "__main__":
    main()
