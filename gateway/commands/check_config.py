"""`gateway check-config FILE`: validate a site config and print a short summary of the site.

Valid: the summary on stdout (and a `warning:` line on stderr for each thing worth a second look), exit 0.
Not valid: one `error: <path>: <message>` line per problem on stderr, exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import sys

NAME = "check-config"
HELP = "validate a site config (TOML) and summarise the site"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the site config, TOML")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when the config is valid")


def run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.config.checks import advisories
    from gateway.config.summary import summarise

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    if not args.quiet:
        print(summarise(config))
        for note in advisories(config):
            print(f"warning: {note}", file=sys.stderr)
    return 0
