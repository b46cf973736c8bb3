"""`gateway demo [--port P] [--speed N]`: the gateway against a whole simulated site, until Ctrl-C.

Starts the demo VTN, six OCPP charge points (1.6J and 2.0.1), two Modbus chargers and a meter with a
house load, all on 127.0.0.1 (`gateway.sim.demo_site`), writes a config for them in a temporary
directory, runs the gateway on it and prints where to look. Once the gateway has registered, the VTN
sends a price signal and, 40 simulated seconds later, a curtailment; `--speed N` runs the simulated
world N times faster. The temporary directory (config and store) is removed on exit.
"""

from __future__ import annotations

import argparse
import sys

NAME = "demo"
HELP = "run the gateway against a simulated site (VTN, OCPP and Modbus chargers, meter)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--port", type=int, default=8080,
                        help="status page port on 127.0.0.1 (default 8080; 0 or a busy port: any free one)")
    parser.add_argument("--speed", type=float, default=1.0, help="run the simulated world N times faster")
    parser.add_argument("--tick", type=float, default=1.0, help="control loop tick in seconds (default 1)")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")


def run(args: argparse.Namespace) -> int:
    import asyncio
    import contextlib

    from gateway.runtime.logs import setup_logging

    if args.speed <= 0 or not 0.1 <= args.tick <= 60:
        print("error: --speed must be above 0 and --tick between 0.1 and 60 s", file=sys.stderr)
        return 2
    setup_logging(as_json=args.log_json)
    try:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(demo(_free_or_any(args.port), args.speed, args.tick))
    except OSError as exc:
        print(f"error: cannot start the demo: {exc}", file=sys.stderr)
        return 1
    return 0


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


async def demo(status_port: int, speed: float, tick_s: float) -> None:
    import asyncio
    import shutil
    import signal
    import tempfile
    from pathlib import Path

    from gateway.config import load_config
    from gateway.runtime.loop import Runtime
    from gateway.sim.demo_site import DemoSite

    site = DemoSite(speed=speed)
    folder = Path(tempfile.mkdtemp(prefix="gateway-demo-"))
    try:
        await site.start_peers()
        config_path = folder / "demo.toml"
        config_path.write_text(site.config_text(folder / "demo.sqlite", status_port=status_port, tick_s=tick_s))
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
            print(f"demo: status page  {runtime.status_url}", file=sys.stderr)
            print(f"demo: VTN          {site.vtn.url}", file=sys.stderr)
            print(f"demo: config       {config_path}", file=sys.stderr)
            print(f"demo: {len(site.ocpp)} OCPP chargers (1.6J, 2.0.1), {len(site.modbus)} Modbus chargers, "
                  f"a meter with a house load; price signal now, curtailment in {site.curtail_after_s / speed:g} s. "
                  "Ctrl-C to stop.",
                  file=sys.stderr)
        await task
    finally:
        await site.stop()
        shutil.rmtree(folder, ignore_errors=True)
