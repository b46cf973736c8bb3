"""`gateway commission --config FILE`: the commissioning checklist of a real installation, and its report.

It runs the gateway's own `Runtime` for the configured site (a scratch store, no VTN, no status page) and
checks, in order: that every OCPP charger dials in within `--wait-s` (and what its BootNotification says
it is), that every Modbus charger and meter answers, each charger's fail-safe settings (the OCPP base
profile and lease; the Modbus fail-safe registers, read back), then steps each charger in turn down to
`--step-a` and back to its limit, with the gateway's decisions held meanwhile, timing how long each step
takes to show in the charger's measured current and on the meter it is behind; last it lowers the site
limit (an operator cap) for `--peak-s` and watches the measured site load stay under it. The report is
Markdown (`gateway.commissioning` renders it). Progress goes to stderr. Exit 0 when every check passed, 1
when one failed or could not be made (a charger that never connects is FAILED in the report, with why),
2 for a bad config or option. At the end the chargers are left on their fail-safe current.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from pathlib import Path

NAME = "commission"
HELP = "run the commissioning checklist against the configured site and write a Markdown report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE", help="the site config, TOML")
    parser.add_argument("--report", default="commissioning.md", metavar="FILE",
                        help="where to write the report (default: commissioning.md)")
    parser.add_argument("--wait-s", type=float, default=60.0, metavar="S",
                        help="how long to wait for the chargers to connect and the meters to answer (default 60)")
    parser.add_argument("--step-a", type=float, default=None, metavar="A",
                        help="the current each charger is stepped down to (default: its own minimum; 0 pauses)")
    parser.add_argument("--timeout-s", type=float, default=30.0, metavar="S",
                        help="how long a step may take to show in the measured current (default 30)")
    parser.add_argument("--peak-s", type=float, default=30.0, metavar="S",
                        help="how long the lowered site limit is held (default 30)")
    parser.add_argument("-v", "--verbose", action="store_true", help="the gateway's own log lines too")


def option_problems(args: argparse.Namespace) -> list[str]:
    from gateway.domain import J1772_MIN_A

    problems = [f"--{name.replace('_', '-')}: must be more than 0 s (got {getattr(args, name):g})"
                for name in ("wait_s", "timeout_s", "peak_s") if not getattr(args, name) > 0]
    step = args.step_a
    if step is not None and (step < 0 or 0 < step < J1772_MIN_A):
        problems.append(f"--step-a: {step:g} A: must be 0 (pause) or at least {J1772_MIN_A:g} A")
    return problems


def say(message: str) -> None:
    print(f"commission: {message}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    from gateway.commissioning import Options, all_checks, commission, passed, render
    from gateway.config import ConfigError, load_config
    from gateway.ocpp import OcppSetupError
    from gateway.runtime.logs import setup_logging

    problems = option_problems(args)
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        problems = [*exc.problems, *problems]
    if problems:
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    if not config.chargers and not config.meters:
        print(f"error: {args.config}: no chargers and no meters: nothing to commission", file=sys.stderr)
        return 2
    setup_logging(level=logging.INFO if args.verbose else logging.WARNING)
    options = Options(args.wait_s, args.step_a, args.timeout_s, args.peak_s)
    try:
        report = asyncio.run(commission(config, options, str(args.config), say))
    except (OSError, OcppSetupError) as exc:
        hint = " (commissioning runs the gateway itself: stop a running gateway first)" if (
            "cannot listen" in str(exc)) else ""
        print(f"error: cannot start: {exc}{hint}", file=sys.stderr)
        return 1
    try:
        Path(args.report).write_text(render(report), encoding="utf-8")
    except OSError as exc:
        print(f"error: cannot write the report to {args.report}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    checks = all_checks(report)
    ok = sum(1 for _, c in checks if c.outcome.value == "PASS")
    for what, check in checks:
        if check.outcome.value != "PASS":
            say(f"{what}: {check.name} {check.outcome.value}: {check.detail}")
    say(f"{ok} of {len(checks)} checks passed; report written to {args.report}")
    return 0 if passed(report) else 1
