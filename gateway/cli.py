"""The `gateway` command: one subcommand per module in `gateway.commands`.

Each command module has `NAME`, `HELP`, `add_arguments(parser)` and `run(args) -> int`, and imports
heavy dependencies inside `run` so that `gateway --help` stays fast. Exit codes: 0 ok, 1 failure at run
time, 2 bad input from the user (config, arguments, files), always with one clear line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence
from types import ModuleType

from gateway import __version__

COMMAND_MODULES = (
    "gateway.commands.check_config",
)


def _commands() -> list[ModuleType]:
    return [importlib.import_module(name) for name in COMMAND_MODULES]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gateway", description="OpenADR 2.0b VEN gateway for EV charging")
    parser.add_argument("--version", action="version", version=f"gateway {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _commands():
        p = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        code: int = args.run(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return code
