"""The charging-session ledger: one row per session per charger (start, stop, meter readings, kWh), what
a multifamily site bills from.

A session opens when a charger reports a vehicle connected and closes when it reports none (or a new
transaction id). Its energy is the sum of the increases of the charger's own energy register, so a
register that resets or a meter that is swapped mid-session loses nothing and counts nothing twice. A
charger that goes offline, or reports a state that says nothing about the plug (unavailable, faulted: what
an OCPP charger reports for the moment between connecting and its first StatusNotification), keeps its
session open: if it comes back with the same session (or one without an id: an OCPP 1.6 charger's
transaction id is not known to a gateway that restarted after it began), the session goes on, in the
same row; if it comes back with another one or with nothing plugged in, the old one closes at the last
moment it was seen connected. Open sessions are read back at start and their chargers count as not seen
since, so a restart (even after SIGKILL) continues them. Rows are never pruned: the ledger is the site's
billing record.

Methods are synchronous; the loop hands them the readings it collected since the last call, from a
worker thread, one call at a time (a lock keeps the connection to one caller).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

import sqlite_utils

from gateway.domain import ChargerReading, ChargerStatus
from gateway.store.db import immediate, open_db


def iso(at: datetime) -> str:
    """One text form for every stored time (UTC, milliseconds), so text order is time order."""
    return at.astimezone(UTC).isoformat(timespec="milliseconds")


@dataclass(frozen=True, slots=True)
class Session:
    id: int
    charger_id: str
    session_id: str | None
    started_at: datetime
    stopped_at: datetime | None
    meter_start_kwh: float | None
    meter_stop_kwh: float | None  # the last reading of the register (while open: the latest)
    energy_kwh: float
    last_seen: datetime  # the last reading that showed it connected (not stored: updated_at is)

    @property
    def open(self) -> bool:
        return self.stopped_at is None


# States that say nothing about whether a car is plugged in.
_PLUG_UNKNOWN = frozenset({ChargerStatus.OFFLINE, ChargerStatus.UNAVAILABLE, ChargerStatus.FAULTED})
_COLUMNS = "id, charger_id, session_id, started_at, stopped_at, meter_start_kwh, meter_stop_kwh, energy_kwh, updated_at"


def _session(row: tuple[object, ...]) -> Session:
    rid, cid, sid, started, stopped, m0, m1, kwh, updated = row
    return Session(int(str(rid)), str(cid), None if sid is None else str(sid), datetime.fromisoformat(str(started)),
                   None if stopped is None else datetime.fromisoformat(str(stopped)),
                   None if m0 is None else float(str(m0)), None if m1 is None else float(str(m1)),
                   float(str(kwh)), datetime.fromisoformat(str(updated)))


class SessionLedger:
    def __init__(self, db: sqlite_utils.Database, lock: threading.Lock | None = None) -> None:
        self.db = db
        self._lock = lock or threading.Lock()
        with self._lock:
            rows = db.conn.execute(f"SELECT {_COLUMNS} FROM charging_sessions WHERE stopped_at IS NULL").fetchall()
        self._open: dict[str, Session] = {s.charger_id: s for s in map(_session, rows)}
        # Chargers not seen since their last reading that told the plug's state: after a restart, every
        # charger with a session open (a session that ended meanwhile closes when it was last seen).
        self._away: set[str] = set(self._open)

    @classmethod
    def open(cls, path: str | Path) -> SessionLedger:
        return cls(open_db(path))

    def close(self) -> None:
        with self._lock:
            self.db.conn.close()

    def open_sessions(self) -> dict[str, Session]:
        """The sessions in progress, by charger (waits for a write under way: `observe` changes them)."""
        with self._lock:
            return dict(self._open)

    def observe(self, readings: Iterable[ChargerReading]) -> int:
        """Apply readings (oldest first) to the ledger in one transaction; returns how many rows changed.
        When it fails (a locked store, a full disk) nothing is changed, in the file or in memory, so the
        same readings can be handed in again."""
        with self._lock:
            open_before, away_before = dict(self._open), set(self._away)
            try:
                with immediate(self.db.conn):
                    changed = sum(self._apply(r) for r in readings)
            except BaseException:
                # the sessions in memory went ahead of what was rolled back
                self._open, self._away = open_before, away_before
                raise
        return changed

    def _apply(self, r: ChargerReading) -> int:
        cid = r.charger_id
        current = self._open.get(cid)
        if r.status in _PLUG_UNKNOWN:
            self._away.add(cid)
            return 0  # nothing known about the plug: a session in progress stays open
        was_away = cid in self._away
        self._away.discard(cid)
        if not r.status.connected:
            if current is None:
                return 0
            return self._stop(current, current.last_seen if was_away else r.at)
        changed = 0
        if current is not None and r.session_id and current.session_id and r.session_id != current.session_id:
            changed += self._stop(current, current.last_seen if was_away else r.at)
            current = None
        if current is None:
            return changed + self._start(r)
        update = replace(current, last_seen=max(current.last_seen, r.at))
        if r.session_id and current.session_id is None:
            update = replace(update, session_id=r.session_id)  # the transaction began after the plug-in
        if r.energy_kwh is not None:
            if current.meter_start_kwh is None:
                update = replace(update, meter_start_kwh=r.energy_kwh)
            elif current.meter_stop_kwh is not None and r.energy_kwh > current.meter_stop_kwh:
                update = replace(update, energy_kwh=current.energy_kwh + r.energy_kwh - current.meter_stop_kwh)
            # A lower reading is a register that reset: it becomes the new base, nothing is subtracted.
            update = replace(update, meter_stop_kwh=r.energy_kwh)
        if update == current:
            return changed
        self.db.conn.execute(
            "UPDATE charging_sessions SET session_id = ?, meter_start_kwh = ?, meter_stop_kwh = ?, energy_kwh = ?, "
            "updated_at = ? WHERE id = ?",
            (update.session_id, update.meter_start_kwh, update.meter_stop_kwh, update.energy_kwh,
             iso(update.last_seen), update.id),
        )
        self._open[cid] = update
        return changed + 1

    def _start(self, r: ChargerReading) -> int:
        cur = self.db.conn.execute(
            "INSERT INTO charging_sessions (charger_id, session_id, started_at, meter_start_kwh, meter_stop_kwh, "
            "energy_kwh, updated_at) VALUES (?, ?, ?, ?, ?, 0, ?)",
            (r.charger_id, r.session_id, iso(r.at), r.energy_kwh, r.energy_kwh, iso(r.at)),
        )
        assert cur.lastrowid is not None
        self._open[r.charger_id] = Session(cur.lastrowid, r.charger_id, r.session_id, r.at, None, r.energy_kwh,
                                           r.energy_kwh, 0.0, r.at)
        return 1

    def _stop(self, s: Session, at: datetime) -> int:
        self.db.conn.execute("UPDATE charging_sessions SET stopped_at = ?, updated_at = ? WHERE id = ?",
                             (iso(at), iso(at), s.id))
        del self._open[s.charger_id]
        return 1

    def sessions(self, since: datetime | None = None, until: datetime | None = None,
                 charger_id: str | None = None) -> list[Session]:
        """Sessions that started in [since, until), oldest first (open ones too)."""
        sql = f"SELECT {_COLUMNS} FROM charging_sessions WHERE 1 = 1"
        params: list[object] = []
        if since is not None:
            sql += " AND started_at >= ?"
            params.append(iso(since))
        if until is not None:
            sql += " AND started_at < ?"
            params.append(iso(until))
        if charger_id is not None:
            sql += " AND charger_id = ?"
            params.append(charger_id)
        with self._lock:
            rows = self.db.conn.execute(sql + " ORDER BY started_at, id", params).fetchall()
        return [_session(r) for r in rows]
