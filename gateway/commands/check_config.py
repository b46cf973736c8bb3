"""`gateway check-config FILE`: validate a site config and print a short summary of the site."""

from __future__ import annotations

import argparse
import sys

NAME = "check-config"
HELP = "validate a site config (TOML) and summarise the site"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the site config, TOML")


def run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.config.summary import summarise

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        print(f"{args.file}: {len(exc.problems)} problem(s)", file=sys.stderr)
        return 2
    print(summarise(config))
    return 0
