"""Fan-out of one site-limit change to many OCPP 1.6J chargers, against the bare `ocpp` library floor.

For each size (default 100, 500, 1000) a child process runs that many simulated charge points on
loopback; they connect to the gateway's OCPP driver, and later (another child) to a bare central system
written with the `ocpp` library alone. Each round changes every charger's limit once; per charger we take
the time from the start of the round until its SetChargingProfile is acknowledged. Rounds alternate
16 A / 15 A so every round really sends. The gateway's table sits beside the floor measured in the same
run. With --load-size, RSS and CPU of this process are sampled while that many chargers (connected to the
gateway) send MeterValues every --meter-s seconds.

    .venv/bin/python bench/ocpp_fanout.py --sizes 100,500,1000 --rounds 5 --load-size 500 --load-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from typing import Any

import websockets
from ocpp import messages as ocpp_messages
from ocpp.v16 import ChargePoint, call, call_result
from websockets.typing import Subprotocol

from gateway.config.ocpp import OcppSection
from gateway.config.site import ChargerSection
from gateway.ocpp import OcppDriver
from gateway.ocpp.link import on
from gateway.ocpp.profiles import Strategy, live_spec, v16_profile
from gateway.sim.ocpp_cp import SimChargePoint

# ----------------------------------------------------------------------------------------------- child


async def run_sims(url: str, count: int, meter_s: float) -> None:
    # the chargers skip schema checks: they stand for separate devices, their CPU is not the gateway's
    sims = [SimChargePoint(url, f"cp{i:04d}", version="1.6", meter_interval_s=meter_s, validate=False)
            for i in range(count)]
    for i in range(0, count, 50):  # stagger so the listen backlog is not flooded
        await asyncio.gather(*(s.start(timeout_s=60) for s in sims[i : i + 50]))
    for s in sims:
        s.ev.plugged = True
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)  # until the parent closes stdin
    await asyncio.gather(*(s.stop() for s in sims))


async def spawn_sims(url: str, count: int, meter_s: float) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--child", url, str(count), str(meter_s),
        stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
    )
    assert proc.stdout is not None
    line = await asyncio.wait_for(proc.stdout.readline(), timeout=120 + count / 5)
    if line.strip() != b"ready":
        raise RuntimeError(f"simulators did not start: {line!r}")
    return proc


async def end_sims(proc: asyncio.subprocess.Process) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    try:
        await asyncio.wait_for(proc.wait(), 30)
    except TimeoutError:
        proc.kill()
        await proc.wait()


# ----------------------------------------------------------------------------------------------- floor


class Bare(ChargePoint):  # type: ignore[misc]
    @on("BootNotification")
    def boot(self, **_: Any) -> Any:
        return call_result.BootNotification(current_time=datetime.now(UTC).isoformat(), interval=300, status="Accepted")

    @on("StatusNotification")
    def status(self, **_: Any) -> Any:
        return call_result.StatusNotification()

    @on("MeterValues")
    def meter(self, **_: Any) -> Any:
        return call_result.MeterValues()

    @on("Heartbeat")
    def heartbeat(self, **_: Any) -> Any:
        return call_result.Heartbeat(current_time=datetime.now(UTC).isoformat())


async def floor_rounds(count: int, rounds: int) -> list[list[float]]:
    ocpp_messages.ASYNC_VALIDATION = True  # the library's default: the floor is the library as shipped
    stations: dict[str, Bare] = {}

    async def handler(ws: Any) -> None:
        cp = Bare(ws.request.path.rsplit("/", 1)[-1], ws, response_timeout=30)
        stations[cp.id] = cp
        with contextlib.suppress(websockets.ConnectionClosed):
            await cp.start()

    async with websockets.serve(handler, "127.0.0.1", 0, subprotocols=[Subprotocol("ocpp1.6")],
                                compression=None) as server:
        port = server.sockets[0].getsockname()[1]
        proc = await spawn_sims(f"ws://127.0.0.1:{port}/ocpp", count, 3600)
        try:
            out = []
            strategy = Strategy("ChargePointMaxProfile", "ChargePointMaxProfile", "A")
            for r in range(rounds):
                amps = 16.0 if r % 2 == 0 else 15.0
                t0 = time.perf_counter()

                async def push(cp: Bare, amps: float = amps, t0: float = t0) -> float:
                    now = datetime.now(UTC)
                    spec = live_spec(strategy, amps, 690.0, 3, now, timedelta(seconds=120))
                    await cp.call(call.SetChargingProfile(connector_id=0, cs_charging_profiles=v16_profile(spec)))
                    return time.perf_counter() - t0

                out.append(list(await asyncio.gather(*(push(cp) for cp in stations.values()))))
            return out
        finally:
            await end_sims(proc)


# ----------------------------------------------------------------------------------------------- gateway


def ids(count: int) -> list[str]:
    return [f"cp{i:04d}" for i in range(count)]


def chargers(count: int) -> list[ChargerSection]:
    return [ChargerSection(id=cid, protocol="ocpp1.6", phases=("L1", "L2", "L3"), max_a=32, fallback_a=8)
            for cid in ids(count)]


async def gateway_rounds(count: int, rounds: int) -> list[list[float]]:
    # no meter traffic here, as in the floor run: the rounds compare the same work
    section = OcppSection(port=0, lease_s=600, ack_wait_s=60, response_timeout_s=30, meter_interval_s=3600)
    driver = OcppDriver(section, chargers(count), dict.fromkeys(ids(count), 690.0))
    async with driver:
        proc = await spawn_sims(f"ws://127.0.0.1:{driver.server.port}/ocpp", count, 3600)
        try:
            await booted(driver)
            out = []
            for r in range(rounds):
                amps = 16.0 if r % 2 == 0 else 15.0
                wall0 = datetime.now(UTC)
                acks = await driver.apply_limits({cid: amps for cid in driver.controls}, "bench")
                if not all(a.accepted for a in acks):
                    raise RuntimeError(f"{sum(not a.accepted for a in acks)} chargers did not accept")
                records = list(driver.history)[-count:]
                out.append([(rec.sent_at - wall0).total_seconds() + rec.round_trip_s for rec in records])
        finally:
            await end_sims(proc)
    return out


async def booted(driver: OcppDriver) -> None:
    deadline = time.monotonic() + 120
    while not all(c.setup is not None and c.setup.done() for c in driver.controls.values()):
        if time.monotonic() > deadline:
            raise RuntimeError("chargers did not finish their boot sequence")
        await asyncio.sleep(0.1)


async def gateway_load(count: int, seconds: float, meter_s: float) -> str:
    section = OcppSection(port=0, lease_s=120, meter_interval_s=int(meter_s))
    driver = OcppDriver(section, chargers(count), dict.fromkeys(ids(count), 690.0))
    readings = 0

    async def consume() -> None:  # the runtime reads every reading; so does the bench
        nonlocal readings
        async for _ in driver.readings():
            readings += 1

    async with driver:
        proc = await spawn_sims(f"ws://127.0.0.1:{driver.server.port}/ocpp", count, meter_s)
        consumer = asyncio.create_task(consume())
        try:
            await booted(driver)
            await driver.apply_limits({cid: 16.0 for cid in driver.controls}, "bench")
            readings = 0
            line = await measure_load(count, seconds, meter_s)
            return f"{line}, {readings / seconds:.0f} readings/s"
        finally:
            consumer.cancel()
            await end_sims(proc)


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


async def measure_load(count: int, seconds: float, meter_s: float) -> str:
    before = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.monotonic()
    peak = rss_mb()
    while time.monotonic() - t0 < seconds:
        await asyncio.sleep(1)
        peak = max(peak, rss_mb())
    after = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    elapsed = time.monotonic() - t0
    return (f"{count} chargers, MeterValues every {meter_s:g} s, {elapsed:.0f} s: gateway process "
            f"RSS {rss_mb():.0f} MB (peak {peak:.0f} MB), CPU {100 * cpu / elapsed:.1f} % of one core")


# ----------------------------------------------------------------------------------------------- report


def summary(rounds: list[list[float]]) -> tuple[float, float, float]:
    """Median over rounds of (p50, p99, slowest) per-charger ack time, in ms."""
    p50s, p99s, maxes = [], [], []
    for acks in rounds:
        ordered = sorted(acks)
        p50s.append(statistics.median(ordered))
        p99s.append(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))])
        maxes.append(ordered[-1])
    return 1000 * statistics.median(p50s), 1000 * statistics.median(p99s), 1000 * statistics.median(maxes)


async def main(args: argparse.Namespace) -> None:
    sizes = [int(s) for s in args.sizes.split(",")]
    rows = []
    loads = []
    for n in sizes:
        g = await gateway_rounds(n, args.rounds)
        f = await floor_rounds(n, args.rounds)
        rows.append((n, summary(g), summary(f)))
        print(f"done {n}", file=sys.stderr, flush=True)
    if args.load_size:
        loads.append(await gateway_load(args.load_size, args.load_s, args.meter_s))
    print(f"one limit change to every charger; per-charger time to ack, median of {args.rounds} rounds (ms)")
    print("| chargers | gateway p50 | gateway p99 | gateway all | floor p50 | floor p99 | floor all | p99 / floor |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, (gp50, gp99, gall), (fp50, fp99, fall) in rows:
        ratio = gp99 / fp99
        print(f"| {n} | {gp50:.0f} | {gp99:.0f} | {gall:.0f} | {fp50:.0f} | {fp99:.0f} | {fall:.0f} | {ratio:.2f} |")
    for line in loads:
        print(line)


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        asyncio.run(run_sims(sys.argv[2], int(sys.argv[3]), float(sys.argv[4])))
        sys.exit(0)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="100,500,1000")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--load-size", type=int, default=500)
    parser.add_argument("--load-s", type=float, default=30.0)
    parser.add_argument("--meter-s", type=float, default=10.0)
    asyncio.run(main(parser.parse_args()))
