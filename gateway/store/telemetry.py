"""Telemetry in SQLite, bounded: site power, EV power and the limit in force, and per charger its current,
power and limit, about once a second; rows older than `RAW_KEEP` become one-minute averages and rows
older than the retention (`[store] telemetry_days`) are dropped.

Times are stored as UNIX seconds (REAL) so averaging by minute is plain arithmetic in SQL; `span_s` says
what a row covers (the write interval for raw rows, 60 for a minute's average). `compact(now)` does both
the downsampling and the dropping in one transaction; `now` is a parameter so tests can place rows in the
past. Methods are synchronous and called from a worker thread, one at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlite_utils

from gateway.store.db import immediate, open_db

RAW_KEEP = timedelta(days=1)  # raw rows are kept this long, then averaged per minute
MINUTE_S = 60.0


@dataclass(frozen=True, slots=True)
class SiteSample:
    site_kw: float | None  # the service meter (or the chargers plus the non-EV estimate)
    ev_kw: float | None
    limit_kw: float | None  # the site power the decision allowed


@dataclass(frozen=True, slots=True)
class ChargerSample:
    current_a: float | None  # the highest phase current it reported
    power_kw: float | None
    limit_a: float | None  # the limit the gateway last decided for it


@dataclass(frozen=True, slots=True)
class Sample:
    """One telemetry sample: the site and every charger at one moment."""

    at: datetime
    span_s: float
    site: SiteSample
    chargers: Mapping[str, ChargerSample]


@dataclass(frozen=True, slots=True)
class SiteRow:
    at: datetime
    span_s: float
    site_kw: float | None
    ev_kw: float | None
    limit_kw: float | None


@dataclass(frozen=True, slots=True)
class ChargerRow:
    at: datetime
    span_s: float
    charger_id: str
    current_a: float | None
    power_kw: float | None
    limit_a: float | None


def _ts(at: datetime) -> float:
    return at.timestamp()


def _dt(ts: object) -> datetime:
    return datetime.fromtimestamp(float(str(ts)), UTC)


def _f(v: object) -> float | None:
    return None if v is None else float(str(v))


class Telemetry:
    def __init__(self, db: sqlite_utils.Database, lock: threading.Lock | None = None) -> None:
        self.db = db
        self._lock = lock or threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> Telemetry:
        return cls(open_db(path))

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def write(self, at: datetime, span_s: float, site: SiteSample, chargers: Mapping[str, ChargerSample]) -> None:
        """One sample of the site and of every charger, in one transaction."""
        self.write_many([Sample(at, span_s, site, chargers)])

    def write_many(self, samples: Sequence[Sample]) -> None:
        """Samples in one transaction (those that waited while the store could not be written)."""
        with self._lock, immediate(self.db.conn) as conn:
            for s in samples:
                ts = _ts(s.at)
                conn.execute(
                    "INSERT INTO telemetry_site (at, span_s, site_kw, ev_kw, limit_kw) VALUES (?, ?, ?, ?, ?)",
                    (ts, s.span_s, s.site.site_kw, s.site.ev_kw, s.site.limit_kw))
                conn.executemany(
                    "INSERT INTO telemetry_chargers (at, span_s, charger_id, current_a, power_kw, limit_a) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    [(ts, s.span_s, cid, c.current_a, c.power_kw, c.limit_a) for cid, c in s.chargers.items()],
                )

    def compact(self, now: datetime, keep: timedelta, raw_keep: timedelta = RAW_KEEP) -> tuple[int, int]:
        """Average raw rows older than `raw_keep` into one row per whole minute and drop every row older
        than `keep`; returns (raw rows averaged away, rows dropped)."""
        # Whole minutes only: the minute the cut falls in stays raw until it is wholly past the cut.
        cut = (_ts(now - raw_keep) // MINUTE_S) * MINUTE_S
        oldest = _ts(now - keep)
        bucket = f"CAST(at / {MINUTE_S} AS INTEGER) * {MINUTE_S}"
        with self._lock, immediate(self.db.conn) as conn:
            conn.execute(
                f"INSERT INTO telemetry_site (at, span_s, site_kw, ev_kw, limit_kw) "
                f"SELECT {bucket}, {MINUTE_S}, AVG(site_kw), AVG(ev_kw), AVG(limit_kw) FROM telemetry_site "
                f"WHERE at < ? AND span_s < {MINUTE_S} GROUP BY {bucket}", (cut,))
            conn.execute(
                f"INSERT INTO telemetry_chargers (at, span_s, charger_id, current_a, power_kw, limit_a) "
                f"SELECT {bucket}, {MINUTE_S}, charger_id, AVG(current_a), AVG(power_kw), AVG(limit_a) "
                f"FROM telemetry_chargers WHERE at < ? AND span_s < {MINUTE_S} GROUP BY {bucket}, charger_id",
                (cut,))
            averaged = 0
            for table in ("telemetry_site", "telemetry_chargers"):
                averaged += conn.execute(f"DELETE FROM {table} WHERE at < ? AND span_s < {MINUTE_S}",
                                         (cut,)).rowcount
            dropped = 0
            for table in ("telemetry_site", "telemetry_chargers"):
                dropped += conn.execute(f"DELETE FROM {table} WHERE at < ?", (oldest,)).rowcount
        return averaged, dropped

    def site(self, since: datetime | None = None, until: datetime | None = None) -> list[SiteRow]:
        sql, params = _window("SELECT at, span_s, site_kw, ev_kw, limit_kw FROM telemetry_site", since, until)
        with self._lock:
            rows = self.db.conn.execute(sql + " ORDER BY at", params).fetchall()
        return [SiteRow(_dt(r[0]), float(r[1]), _f(r[2]), _f(r[3]), _f(r[4])) for r in rows]

    def chargers(self, since: datetime | None = None, until: datetime | None = None) -> list[ChargerRow]:
        sql, params = _window("SELECT at, span_s, charger_id, current_a, power_kw, limit_a FROM telemetry_chargers",
                              since, until)
        with self._lock:
            rows = self.db.conn.execute(sql + " ORDER BY at, charger_id", params).fetchall()
        return [ChargerRow(_dt(r[0]), float(r[1]), str(r[2]), _f(r[3]), _f(r[4]), _f(r[5])) for r in rows]


def _window(sql: str, since: datetime | None, until: datetime | None) -> tuple[str, list[object]]:
    params: list[object] = []
    clauses = []
    if since is not None:
        clauses.append("at >= ?")
        params.append(_ts(since))
    if until is not None:
        clauses.append("at < ?")
        params.append(_ts(until))
    return (sql + (" WHERE " + " AND ".join(clauses) if clauses else "")), params
