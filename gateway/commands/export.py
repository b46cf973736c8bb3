"""`gateway export sessions|telemetry|charger-telemetry|limits --csv`: the store's records as CSV on stdout.

`sessions` is the charging-session ledger (one row per session per charger, with its meter readings and
kWh: what a multifamily site bills from); `telemetry` the site's power and limit over time;
`charger-telemetry` each charger's current, power and limit; `limits` every limit sent with its reason,
acknowledgement and latency. The store is named by `--db PATH` or by the `[store] path` of `--config
FILE` (relative to the current directory, as `gateway run` opens it) and opened read-only, so exporting
from a running gateway is safe. `--since` / `--until` take a date or an ISO 8601 time (UTC unless it says
otherwise); sessions are chosen by their start. A missing file, one that is not a gateway store, or one
of an older schema is one `error:` line and exit 2.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import sqlite3
import sys
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TextIO
from urllib.parse import quote

NAME = "export"
HELP = "export charging sessions, telemetry or limits sent from the store as CSV"
WHAT = ("sessions", "telemetry", "charger-telemetry", "limits")


class ExportError(Exception):
    """Something the user gave that cannot be exported: one line, exit 2."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("what", choices=WHAT, help="which records")
    parser.add_argument("--csv", action="store_true", help="CSV with a header line (the only format, the default)")
    where = parser.add_mutually_exclusive_group(required=True)
    where.add_argument("--config", metavar="FILE", help="the site config, TOML: its [store] path")
    where.add_argument("--db", metavar="PATH", help="the store's SQLite file")
    parser.add_argument("--since", metavar="DATE", help="from this date or time (inclusive)")
    parser.add_argument("--until", metavar="DATE", help="up to this date or time (exclusive)")


def run(args: argparse.Namespace) -> int:
    try:
        since, until = parse_when(args.since, "--since"), parse_when(args.until, "--until")
        path = store_path(args.config, args.db)
        with contextlib.closing(open_store(path)) as conn:
            rows = records(conn, args.what, since, until)
            write_csv(sys.stdout, rows)
    except ExportError as exc:
        for line in str(exc).splitlines():
            print(f"error: {line}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # `| head`: the reader has what it wanted
        return 0
    return 0


def parse_when(text: str | None, option: str) -> datetime | None:
    if text is None:
        return None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        raise ExportError(f"{option}: {text!r} is not a date (YYYY-MM-DD) or an ISO 8601 time") from None
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at


def store_path(config: str | None, db: str | None) -> Path:
    if db is not None:
        return Path(db)
    from gateway.config import ConfigError, load_config

    assert config is not None
    try:
        return Path(load_config(config).store.path)
    except ConfigError as exc:
        raise ExportError("\n".join(str(p) for p in exc.problems)) from None


def open_store(path: Path) -> sqlite3.Connection:
    """The store, read-only, after checking it is one this gateway knows."""
    from gateway.store.db import MIGRATIONS

    if not path.is_file():
        raise ExportError(f"{path}: no such store (the [store] path of a gateway that has run)")
    conn = sqlite3.connect(f"file:{quote(str(path.resolve()))}?mode=ro", uri=True, timeout=10.0)
    try:
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        if version == 0 or "events" not in tables:
            raise ExportError(f"{path}: not a gateway store (no gateway schema in it)")
        if version > len(MIGRATIONS):
            raise ExportError(f"{path}: store schema version {version} is newer than this gateway's "
                              f"({len(MIGRATIONS)}): export with the gateway that wrote it")
        if version < len(MIGRATIONS):
            raise ExportError(f"{path}: store schema version {version} is older than this gateway's "
                              f"({len(MIGRATIONS)}): start the gateway once to upgrade it")
    except sqlite3.Error as exc:
        conn.close()
        raise ExportError(f"{path}: not a gateway store ({exc})") from None
    except ExportError:
        conn.close()
        raise
    return conn


def records(conn: sqlite3.Connection, what: str, since: datetime | None,
            until: datetime | None) -> list[Sequence[object]]:
    """The header and the rows of one export."""
    import sqlite_utils

    from gateway.store.decisions import DecisionStore
    from gateway.store.sessions import SessionLedger, iso
    from gateway.store.telemetry import Telemetry

    db = sqlite_utils.Database(conn)
    try:
        if what == "sessions":
            out: list[Sequence[object]] = [("session", "charger_id", "session_id", "started_at", "stopped_at",
                                            "meter_start_kwh", "meter_stop_kwh", "energy_kwh")]
            out += [(s.id, s.charger_id, s.session_id, iso(s.started_at), _opt_iso(s.stopped_at),
                     _num(s.meter_start_kwh), _num(s.meter_stop_kwh), _num(s.energy_kwh))
                    for s in SessionLedger(db).sessions(since, until)]
        elif what == "telemetry":
            out = [("at", "span_s", "site_kw", "ev_kw", "limit_kw")]
            out += [(iso(r.at), r.span_s, _num(r.site_kw), _num(r.ev_kw), _num(r.limit_kw))
                    for r in Telemetry(db).site(since, until)]
        elif what == "charger-telemetry":
            out = [("at", "span_s", "charger_id", "current_a", "power_kw", "limit_a")]
            out += [(iso(r.at), r.span_s, r.charger_id, _num(r.current_a), _num(r.power_kw), _num(r.limit_a))
                    for r in Telemetry(db).chargers(since, until)]
        else:
            out = [("decided_at", "charger_id", "old_a", "new_a", "reason", "accepted", "latency_s", "detail")]
            out += [(iso(r.decided_at), r.charger_id, _num(r.old_a), _num(r.new_a), r.reason,
                     "" if r.accepted is None else int(r.accepted), _num(r.latency_s), r.detail)
                    for r in DecisionStore(db).between(since, until)]
    except sqlite3.Error as exc:
        raise ExportError(f"the store cannot be read ({exc})") from None
    return out


def _opt_iso(at: datetime | None) -> str:
    from gateway.store.sessions import iso

    return "" if at is None else iso(at)


def _num(value: float | None) -> str:
    return "" if value is None else f"{value:.4f}".rstrip("0").rstrip(".")


def write_csv(out: TextIO, rows: Iterable[Sequence[object]]) -> None:
    writer = csv.writer(out, lineterminator="\n")
    writer.writerows(rows)
