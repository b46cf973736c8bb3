"""`gateway allocate FILE|-`: one allocation from scratch, as JSON: a dry run a user can check by hand."""

from __future__ import annotations

import argparse
import json
import os
import sys

NAME = "allocate"
HELP = "compute one allocation from a JSON description of the site and print it as JSON"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the input JSON, or - for standard input")


def run(args: argparse.Namespace) -> int:
    from gateway.allocate import ProblemError, allocate
    from gateway.allocation_input import parse_allocation_input, read_json_input, to_problem
    from gateway.config import ConfigError

    try:
        problem = to_problem(parse_allocation_input(read_json_input(args.file)))
        result = allocate(problem)
    except ConfigError as exc:
        for line in exc.problems:
            print(f"error: {line}", file=sys.stderr)
        return 2
    except ProblemError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    # Whole amps print as 16, not 16.0: what a charger is told, and what the example shows.
    amps = {ident: int(a) if float(a).is_integer() else a for ident, a in result.amps.items()}
    out: dict[str, object] = {"allocations": amps, "binding": dict(result.binding)}
    if result.overloaded:
        out["overloaded"] = list(result.overloaded)  # with units: "site: non-EV load 60 kW over its limit 50 kW"
    try:
        print(json.dumps(out, indent=2), flush=True)
    except BrokenPipeError:
        # `gateway allocate in.json | head`: the reader has seen enough; no traceback at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    return 0
