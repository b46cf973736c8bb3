"""A crash and immediate restart of `gateway run` with many OCPP chargers charging: how long until every
charger holds a live limit from the new process, and how long any EV sat at 0 A.

`gateway run` is a subprocess; the simulated charge points (half 1.6J, half 2.0.1, every EV plugged in)
run in this process and record what they held and drew. The run boots the site, waits until every
charger holds a live limit, SIGKILLs the gateway and starts it again at once on the same store, then
reads from the chargers' own records:
- boot: from the gateway's start until every charger held a live limit (the reference, same machine,
  same run: the restart must not be slower than a cold start);
- reconnect: from the restart until every charger's websocket was back (the floor: nothing can be
  sent before);
- restart: from the restart until every charger accepted a live limit from the new process;
- 0 A: the longest time any plugged-in EV drew nothing after the kill (the target is 0).

    .venv/bin/python bench/ocpp_restart.py --chargers 200 --lease-s 30
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from gateway.sim.ocpp_cp import Ev, Quirks, SimChargePoint


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(folder: Path, count: int, port: int, lease_s: float) -> Path:
    lines = ["[site]", 'wiring = "three-phase-400/230"', f"service_breaker_a = {13 * count}", ""]
    for i in range(count):
        protocol = "ocpp1.6" if i % 2 == 0 else "ocpp2.0.1"
        lines += ["[[chargers]]", f'id = "cp{i:04d}"', f'protocol = "{protocol}"', 'phases = "L1-L2-L3"',
                  "max_a = 32", "fallback_a = 6", ""]
    lines += ["[ocpp]", f"port = {port}", f"lease_s = {lease_s}", "meter_interval_s = 10", "ack_wait_s = 2", "",
              "[control]", "tick_s = 1", "", "[status]", "port = 0", "",
              "[store]", f'path = "{folder / "gw.sqlite"}"', ""]
    path = folder / "site.toml"
    path.write_text("\n".join(lines))
    return path


class Gateway:
    def __init__(self, config: Path) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                                     stderr=subprocess.PIPE, text=True, cwd=config.parent)
        self.lines: list[str] = []
        stream = self.proc.stderr
        assert stream is not None
        threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True).start()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()


async def until(cond: object, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():  # type: ignore[operator]
            return True
        await asyncio.sleep(0.05)
    return False


def live_since(sim: SimChargePoint, since: datetime) -> datetime | None:
    """When the charger first took a live limit (anything but the base at its fallback) at or after `since`."""
    return next((at for at, p in sim.accepted if at >= since and p.profile_id != 1), None)


def zero_time(sim: SimChargePoint, start: datetime, end: datetime) -> float:
    points = [*sim.breakpoints(start, end), end]
    total = 0.0
    for a, b in itertools.pairwise(points):
        moment = sim._moment(a)
        if moment is not None and moment.plugged and sim.draw_at(a) == 0.0:
            total += (b - a).total_seconds()
    return total


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chargers", type=int, default=200)
    parser.add_argument("--lease-s", type=float, default=30.0)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="ocpp-restart-"))
    port = free_port()
    config = write_config(folder, args.chargers, port, args.lease_s)
    url = f"ws://127.0.0.1:{port}/ocpp"
    sims = [SimChargePoint(url, f"cp{i:04d}", version="1.6" if i % 2 == 0 else "2.0.1", ev=Ev(max_a=32),
                           meter_interval_s=10, validate=False, quirks=Quirks(boot_on_reconnect=False))
            for i in range(args.chargers)]
    booted = datetime.now(UTC)
    gateway = Gateway(config)
    try:
        for i in range(0, len(sims), 50):
            await asyncio.gather(*(s.start(timeout_s=60) for s in sims[i:i + 50]))
        for s in sims:
            await s.plug_in()
        assert await until(lambda: all(live_since(s, booted) for s in sims), 120), "boot: not every charger got a limit"
        boot_s = max((live_since(s, booted) or booted) - booted for s in sims).total_seconds()
        await asyncio.sleep(3)
        gateway.kill()
        killed = datetime.now(UTC)
        gateway = Gateway(config)
        await until(lambda: all(any(t > killed for t in s.connected_at) for s in sims), 60)
        ok = await until(lambda: all(live_since(s, killed) for s in sims), 120)
        end = datetime.now(UTC)
        restart_s = max(((live_since(s, killed) or end) - killed).total_seconds() for s in sims)
        reconnect_s = max((min((t for t in s.connected_at if t > killed), default=end) - killed).total_seconds()
                          for s in sims)
        zero_s = max(zero_time(s, killed, end) for s in sims)
        print("| chargers | boot: all limited s | restart: all reconnected s | restart: all limited s "
              "| longest EV at 0 A after the kill s |")
        print("|---:|---:|---:|---:|---:|")
        print(f"| {args.chargers} | {boot_s:.2f} | {reconnect_s:.2f} | {restart_s:.2f}{'' if ok else ' (timed out)'} "
              f"| {zero_s:.2f} |")
    finally:
        gateway.stop()
        await asyncio.gather(*(s.stop() for s in sims), return_exceptions=True)


if __name__ == "__main__":
    asyncio.run(main())
