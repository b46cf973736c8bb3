"""What the control loop keeps in SQLite: every limit it sent, why, whether the charger accepted it and
how long the answer took. Rows are written after the push (the ack is part of the row), in one
transaction per decision; old rows are pruned by age so the file stays bounded.

Methods are synchronous and short; the loop calls them from a worker thread, one at a time (a lock keeps
the connection to one caller).
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import sqlite_utils

from gateway.domain import LimitAck
from gateway.store.db import immediate, open_db


@dataclass(frozen=True, slots=True)
class SentLimit:
    decided_at: datetime
    charger_id: str
    old_a: float
    new_a: float
    reason: str
    accepted: bool | None
    latency_s: float | None
    detail: str = ""


class DecisionStore:
    def __init__(self, db: sqlite_utils.Database) -> None:
        self.db = db
        self._lock = threading.Lock()

    @classmethod
    def open(cls, path: str | Path) -> DecisionStore:
        return cls(open_db(path))

    @property
    def lock(self) -> threading.Lock:
        """The connection's lock, for the ledger and telemetry that share this connection."""
        return self._lock

    def close(self) -> None:
        # Waits for a write still running in a worker thread: closing under it would break sqlite.
        with self._lock:
            self.db.conn.close()

    def record(self, rows: Iterable[SentLimit]) -> int:
        values = [
            (r.decided_at.isoformat(), r.charger_id, r.old_a, r.new_a, r.reason,
             None if r.accepted is None else int(r.accepted), r.latency_s, r.detail)
            for r in rows
        ]
        if not values:
            return 0
        with self._lock, immediate(self.db.conn) as conn:
            conn.executemany(
                "INSERT INTO limits_sent (decided_at, charger_id, old_a, new_a, reason, accepted, latency_s, "
                "detail) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                values,
            )
        return len(values)

    def recent(self, limit: int = 100, charger_id: str | None = None) -> list[SentLimit]:
        sql = "SELECT decided_at, charger_id, old_a, new_a, reason, accepted, latency_s, detail FROM limits_sent"
        params: Sequence[object] = ()
        if charger_id is not None:
            sql += " WHERE charger_id = ?"
            params = (charger_id,)
        sql += " ORDER BY id DESC LIMIT ?"
        with self._lock:
            rows = self.db.conn.execute(sql, (*params, limit)).fetchall()
        return [
            SentLimit(datetime.fromisoformat(r[0]), r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]),
                      r[6], r[7])
            for r in rows
        ]

    def between(self, since: datetime | None = None, until: datetime | None = None) -> list[SentLimit]:
        """Limits sent in [since, until), oldest first."""
        sql = "SELECT decided_at, charger_id, old_a, new_a, reason, accepted, latency_s, detail FROM limits_sent"
        clauses, params = [], []
        if since is not None:
            clauses.append("decided_at >= ?")
            params.append(since.isoformat())
        if until is not None:
            clauses.append("decided_at < ?")
            params.append(until.isoformat())
        if clauses:
            sql += " WHERE " + " AND ".join(clauses)
        with self._lock:
            rows = self.db.conn.execute(sql + " ORDER BY id", params).fetchall()
        return [
            SentLimit(datetime.fromisoformat(r[0]), r[1], r[2], r[3], r[4], None if r[5] is None else bool(r[5]),
                      r[6], r[7])
            for r in rows
        ]

    def prune(self, before: datetime) -> int:
        with self._lock:
            cur = self.db.conn.execute("DELETE FROM limits_sent WHERE decided_at < ?", (before.isoformat(),))
        return int(cur.rowcount)


def rows_for(decided_at: datetime, changes: Sequence[tuple[str, float, float, str]],
             acks: Sequence[LimitAck]) -> list[SentLimit]:
    """One row per change (charger, old, new, reason), joined with its acknowledgement when there is one."""
    by_id = {a.charger_id: a for a in acks}
    out = []
    for cid, old, new, reason in changes:
        ack = by_id.get(cid)
        out.append(SentLimit(decided_at, cid, old, new, reason, None if ack is None else ack.accepted,
                             None if ack is None else ack.round_trip_s, "" if ack is None else ack.detail))
    return out
