"""`gateway demo [--port P] [--speed N]`: the gateway against a whole simulated site, until Ctrl-C.

Starts the demo VTN, six OCPP charge points (1.6J and 2.0.1), two Modbus chargers and a meter with a
house load, all on 127.0.0.1 (`gateway.sim.demo_site`), writes a config for them in a temporary
directory, runs the gateway on it and prints where to look. Once the gateway has registered, the VTN
sends a price signal and, 40 simulated seconds later, a curtailment; `--speed N` runs the simulated
world N times faster. The status endpoint gets a fresh operator token, printed with the page's address, so
the page's controls and the write API can be tried at once; the site's time zone is the machine's unless
`--timezone` names one. With `--log-json` every line on stderr is JSON, the demo's own included. The
temporary directory (config and store) is removed on exit.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

NAME = "demo"
HELP = "run the gateway against a simulated site (VTN, OCPP and Modbus chargers, meter)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080,
                        help="status page port on 127.0.0.1 (default 8080; 0 or a busy port: any free one)")
    parser.add_argument("--speed", type=float, default=1.0, help="run the simulated world N times faster")
    parser.add_argument("--tick", type=float, default=1.0, help="control loop tick in seconds (default 1)")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument("--timezone", default=None,
                        help="the site's time zone, an IANA name such as Europe/Berlin (default: the machine's)")
    parser.add_argument("--openadr", choices=("2.0b", "3.0.1", "3.1.0"), default="2.0b",
                        help="the OpenADR version the VTN and the VEN speak (default 2.0b)")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from gateway.runtime.logs import setup_logging

    if args.speed <= 0 or not 0.1 <= args.tick <= 60:
        print("error: --speed must be above 0 and --tick between 0.1 and 60 s", file=sys.stderr)
        return 2
    zone = args.timezone or _local_zone()
    try:
        from zoneinfo import ZoneInfo

        ZoneInfo(zone)
    except (ValueError, KeyError, OSError):
        print(f"error: --timezone: {zone!r} is not a known IANA time zone (e.g. Europe/Berlin)", file=sys.stderr)
        return 2
    setup_logging(as_json=args.log_json)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(demo(_free_or_any(args.port), args.speed, args.tick, zone=zone, as_json=args.log_json,
                             openadr=args.openadr))
    except OSError as exc:
        print(f"error: cannot start the demo: {exc}", file=sys.stderr)
        return 1
    return 0


def _local_zone() -> str:
    """The machine's IANA zone name (from /etc/localtime's link or $TZ), else UTC."""
    import os
    from pathlib import Path

    name = os.environ.get("TZ", "").lstrip(":")
    if not name:
        try:
            target = str(Path("/etc/localtime").resolve())
        except OSError:
            target = ""
        name = target.split("zoneinfo/", 1)[1] if "zoneinfo/" in target else ""
    return name or "UTC"


def with_token_and_zone(config: str, token: str, zone: str) -> str:
    """The demo site's config with an operator token under [status] and the site's time zone."""
    config = config.replace("[status]\n", f'[status]\ntoken = "{token}"\n', 1)
    return config.replace("[site]\n", f'[site]\ntimezone = "{zone}"\n', 1)


DEMO_KWP = 40.0  # the demo's PV array


def with_pv(config: str, inverter_port: int) -> str:
    """The demo site's config with its PV: the grid meter may see export, the inverter is read over SunSpec."""
    config = config.replace('[[meters]]\nid = "grid"\n', f'[[meters]]\nid = "grid"\npv_kw = {DEMO_KWP:g}\n', 1)
    return config + (f'\n[pv]\ngrid_meter = "grid"\nstart_delay_s = 30\nstop_delay_s = 60\n\n[[pv.inverters]]\n'
                     f'id = "roof"\nhost = "127.0.0.1"\nport = {inverter_port}\npoll_s = 1\nstale_after_s = 5\n')


async def _sunshine(inverter: Any, speed: float) -> None:
    """The demo's sun: a simulated hour from dawn to dusk and back, with a cloud now and then."""
    import asyncio
    import math
    import random

    rng = random.Random(3)
    began = asyncio.get_running_loop().time()
    while True:
        t = (asyncio.get_running_loop().time() - began) * speed
        sun = max(0.0, math.sin(math.pi * (t % 3600.0) / 3600.0))
        cloud = 0.3 if rng.random() < 0.1 else 1.0
        inverter.set(pv_kw=round(DEMO_KWP * sun * cloud, 2))
        await asyncio.sleep(max(0.2, 5.0 / speed))


def say(text: str, as_json: bool) -> None:
    """A line for the person who started the demo: plain, or a JSON log line when every line must be JSON."""
    if as_json:
        import logging

        logging.getLogger("gateway.demo").info("%s", text)
    else:
        print(f"demo: {text}", file=sys.stderr)


def _free_or_any(port: int) -> int:
    """The asked-for port if nothing listens there, else 0 (the OS picks): a demo should just start."""
    import socket

    if port == 0:
        return 0
    with socket.socket() as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            print(f"note: port {port} is busy; the status page takes any free port", file=sys.stderr)
            return 0
    return port


async def demo(status_port: int, speed: float, tick_s: float, *, zone: str = "UTC", as_json: bool = False,
               openadr: str = "2.0b") -> None:
    import asyncio
    import secrets
    import shutil
    import signal
    import tempfile
    from pathlib import Path

    from gateway.config import load_config
    from gateway.runtime.loop import Runtime
    from gateway.sim.demo_site import DemoSite
    from gateway.sim.sunspec_inverter import MeterBehindPv, SimInverter

    inverter = SimInverter(phases=3, battery=False, meter=False, serial="DEMO-PV-1")
    site = DemoSite(speed=speed, meter=MeterBehindPv("eastron-sdm630", inverter))
    folder = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    stops: list[Any] = []  # what the OpenADR 3 variant starts besides the site
    try:
        await site.start_peers()
        await inverter.start()
        stops += [inverter.stop, asyncio.create_task(_sunshine(inverter, speed)).cancel]
        config_path = folder / "demo.toml"
        token = secrets.token_urlsafe(18)
        text = site.config_text(folder / "demo.sqlite", status_port=status_port, tick_s=tick_s)
        text = with_pv(text, inverter.port)
        vtn_url = site.vtn.url
        if openadr != "2.0b":  # the same site and story over OpenADR 3 (gateway.sim.vtn3)
            import re

            from gateway.sim.vtn3 import SimVtn3, config_block, demo_events

            vtn3 = SimVtn3(version=openadr)
            await vtn3.start()
            vtn_url = vtn3.url
            text = re.sub(r"\[vtn\]\n(?:.+\n)*\n", lambda _: config_block(vtn3), text, count=1)
            story = asyncio.create_task(demo_events(vtn3, speed=speed, curtail_after_s=site.curtail_after_s))
            stops += [story.cancel, vtn3.stop]
        config_path.write_text(with_token_and_zone(text, token, zone))
        runtime = Runtime(load_config(config_path))
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, runtime.stop)
        task = asyncio.create_task(runtime.run())
        started = asyncio.create_task(runtime.started.wait())
        await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
        started.cancel()
        if runtime.ocpp is not None and not task.done():
            await site.start_chargers(f"ws://127.0.0.1:{runtime.ocpp.server.port}/ocpp")
            say(f"status page  {runtime.status_url}", as_json)
            say(f"token        {token}   (operator controls on the page; curl -H 'Authorization: Bearer {token}')",
                as_json)
            say(f"VTN          {vtn_url} (OpenADR {openadr})", as_json)
            say(f"PV           a {DEMO_KWP:g} kWp SunSpec inverter on 127.0.0.1:{inverter.port} behind the grid "
                "meter; try a charger in pv mode: curl -X POST -H 'Authorization: Bearer <token>' -d "
                "'{\"mode\": \"pv\"}' <status page>api/evses/<id>/mode", as_json)
            say(f"config       {config_path}", as_json)
            say(f"{len(site.ocpp)} OCPP chargers (1.6J, 2.0.1), {len(site.modbus)} Modbus chargers, a meter with a "
                f"house load; price signal now, curtailment in {site.curtail_after_s / speed:g} s. Ctrl-C to stop.",
                as_json)
        await task
    finally:
        for stop in stops:
            if asyncio.iscoroutine(done := stop()):
                await done
        await site.stop()
        shutil.rmtree(folder, ignore_errors=True)
