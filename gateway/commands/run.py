"""`gateway run --config FILE`: run the gateway for a site until SIGTERM or Ctrl-C.

A config that is not valid prints one `error:` line per problem and exits 2 before anything starts;
something the gateway cannot open at start (a port in use, an unwritable store) is one line and exit 1; a
damaged store is one line saying what to do and exit 2 (restarting cannot mend it; docs/store.md).
On SIGTERM or Ctrl-C the OCPP chargers are released to their fallback current, the Modbus chargers left
to their watchdog and the store closed before exiting 0. SIGHUP (`systemctl reload`) reads the config
again and applies what can change live (`gateway.runtime.reload`); the gateway keeps running either way.
Logs go to stderr, key=value (or JSON).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

NAME = "run"
HELP = "run the gateway for the site described by a config file"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the site config, TOML")
    parser.add_argument("--log-json", action="store_true", help="log one JSON object per line")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")


def _say(line: str, as_json: bool) -> None:
    """One line on stderr; with --log-json a JSON object like every log line, so a collector parses all."""
    if as_json:
        import json
        from datetime import UTC, datetime

        level = "error" if line.startswith("error: ") else "info"
        print(json.dumps({"at": datetime.now(UTC).isoformat(timespec="milliseconds"), "level": level,
                          "logger": "gateway.run", "message": line.removeprefix("error: ")}), file=sys.stderr)
    else:
        print(line, file=sys.stderr)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    from gateway.config import ConfigError, load_config
    from gateway.runtime.logs import setup_logging
    from gateway.store.db import StoreDamaged, StoreError

    try:
        config = load_config(args.config)
    except ConfigError as exc:
        for problem in exc.problems:
            _say(f"error: {problem}", args.log_json)
        return 2
    setup_logging(as_json=args.log_json, level=logging.DEBUG if args.verbose else logging.INFO)
    try:
        asyncio.run(serve(config, config_path=args.config, as_json=args.log_json))
    except StoreDamaged as exc:
        _say(f"error: {exc}", args.log_json)
        return 2
    except StoreError as exc:
        _say(f"error: {exc}", args.log_json)
        return 1
    except OSError as exc:
        _say(f"error: cannot start: {exc}", args.log_json)
        return 1
    return 0


async def serve(config: GatewayConfig, *, announce: bool = True, config_path: str | None = None,
                as_json: bool = False) -> None:
    """Run a `Runtime` for `config` until SIGTERM or SIGINT; SIGHUP reloads `config_path` (when given)."""
    import asyncio
    import signal

    from gateway.runtime.loop import Runtime
    from gateway.runtime.reload import reload

    runtime = Runtime(config)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, runtime.stop)
    if config_path is not None:
        path = config_path
        loop.add_signal_handler(signal.SIGHUP, lambda: reload(runtime, path))
    else:  # nothing to read again: a reload changes nothing, and must not kill the gateway
        loop.add_signal_handler(signal.SIGHUP, lambda: None)
    task = asyncio.create_task(runtime.run())
    started = asyncio.create_task(runtime.started.wait())
    await asyncio.wait({task, started}, return_when=asyncio.FIRST_COMPLETED)
    if announce and runtime.status_url and not task.done():
        _say(f"gateway running; status at {runtime.status_url}", as_json)
    started.cancel()
    await task
