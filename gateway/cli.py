"""The `gateway` command: one subcommand per module in `gateway.commands`.

Every module in `gateway.commands` is a command: it has `NAME`, `HELP`, `add_arguments(parser)` and
`run(args) -> int` (found by name, so adding a command is adding a file), and imports
heavy dependencies inside `run` so that `gateway --help` stays fast. Exit codes: 0 ok, 1 failure at run
time, 2 bad input from the user (config, arguments, files), always with one clear line per problem.
"""

from __future__ import annotations

import argparse
import importlib
import pkgutil
import sys
import warnings
from collections.abc import Sequence
from types import ModuleType

from gateway import __version__

# signxml (under openleadr) names DSA types, which the cryptography package warns about at import: two
# lines of traceback on every start that say nothing about the gateway (DSA is never used: the VEN signs
# with the key it is given, RSA or ECDSA). Only that warning is silenced, and only for the command.
warnings.filterwarnings("ignore", message="DSA is deprecated", module="signxml")


def _commands() -> list[ModuleType]:
    import gateway.commands

    names = sorted(m.name for m in pkgutil.iter_modules(gateway.commands.__path__) if not m.ispkg)
    return [importlib.import_module(f"gateway.commands.{name}") for name in names]


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
