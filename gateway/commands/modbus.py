"""`gateway modbus read --model M --host H`: read a Modbus device once by its register map and print it.

The commissioning check for a new charger or meter (or a new map): every readable register decoded in the
gateway's units, plus a warning for each value no device can measure (a sign of wrong word order or
scale). Exit 2 with one line for a wrong model or an unreachable device; nothing is ever written.
"""

from __future__ import annotations

import argparse
import sys

NAME = "modbus"
HELP = "talk to a Modbus TCP charger or meter by its register map (one-shot read)"


HINTS: dict[object, str] = {
    "timeout": " (is it a Modbus TCP device, and is Modbus enabled on it?)",
    2: " (an address the device does not have: is --model the right map for it?)",
    10: " (wrong --unit?)",
    11: " (wrong --unit?)",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    read = sub.add_parser("read", help="read every readable register once and print the decoded values")
    read.add_argument("--model", required=True, help="a shipped map name or the path to a map file (.toml)")
    read.add_argument("--host", required=True, help="the device (or its Modbus TCP gateway)")
    read.add_argument("--port", type=int, default=502)
    read.add_argument("--unit", type=int, default=None, help="unit id (default: the map's)")
    read.add_argument("--timeout", type=float, default=3.0, help="seconds per request (default 3)")
    sub.add_parser("models", help="list the shipped register maps")


def run(args: argparse.Namespace) -> int:
    from gateway.modbus.maps import MapError, load_map, shipped_models

    if args.action == "models":
        for name in shipped_models():
            m = load_map(name)
            print(f"{name:24} {m.kind:8} {m.vendor} {m.product}")
        return 0
    try:
        m = load_map(args.model)
    except MapError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    if not 1 <= args.port <= 65535 or (args.unit is not None and not 0 <= args.unit <= 255):
        print("error: --port must be 1-65535 and --unit 0-255", file=sys.stderr)
        return 2
    if args.timeout <= 0:
        print("error: --timeout must be positive", file=sys.stderr)
        return 2
    import asyncio
    import logging

    # the one error line below says it all; the link's own log line would repeat it
    quiet = logging.getLogger("gateway.modbus")
    level = quiet.level
    quiet.setLevel(logging.CRITICAL)
    try:
        return asyncio.run(_read(m, args.host, args.port, args.unit, args.timeout))
    finally:
        quiet.setLevel(level)


async def _read(m: object, host: str, port: int, unit: int | None, timeout_s: float) -> int:
    from gateway.modbus.codec import decode_block, implausible, read_plan
    from gateway.modbus.link import LinkError, ModbusLink
    from gateway.modbus.maps import RegisterMap

    assert isinstance(m, RegisterMap)
    link = ModbusLink(host, port, timeout_s=timeout_s, backoff_s=0.0)
    unit_id = m.unit if unit is None else unit
    print(f"{m.name} ({m.vendor} {m.product}) at {host}:{port} unit {unit_id}")
    try:
        for block in read_plan(m):
            regs = await link.read(block.table, block.address, block.count, unit_id)
            for name, value in decode_block(m, block, regs).items():
                r = m.registers[name]
                where = f"{r.table.value} {r.address} (0x{r.address:04X})"
                shown = f"{value!r}" if isinstance(value, str) else f"{value:.6g} {m.quantity(name)}"
                if name == "status" and m.status:
                    key = value if isinstance(value, str) else f"{value:g}"
                    shown += f" → {m.status[key].value}" if key in m.status else " → not in the map's [status]"
                warn = implausible(m, name, value) if name != "status" else None
                print(f"  {name:16} {shown:28} {where}{'  WARNING: ' + warn if warn else ''}")
    except LinkError as exc:
        hint = HINTS.get(exc.code if exc.kind == "exception" else exc.kind, "")
        print(f"error: {host}:{port} unit {unit_id}: {exc.detail}{hint}", file=sys.stderr)
        return 2
    finally:
        await link.close()
    return 0
