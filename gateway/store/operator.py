"""What an operator set over the status endpoint, kept in SQLite so that a restart does not lift it: the
temporary site cap (kW and when it lapses), the chargers paused by hand and the charge modes set by hand
(for the session or until changed).

An operator who capped the site for electrical work, or paused a charger with a fault, expects the gateway
to come back from a restart (a crash, an upgrade, a power cut) with the same cap and pauses. One row per
key, JSON values, written in one transaction on every change; a cap whose time has passed is read back
as no cap. Methods are synchronous and called from a worker thread, under the connection's lock.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlite_utils

from gateway.store.db import immediate


@dataclass(frozen=True, slots=True)
class OperatorState:
    cap_kw: float | None = None
    cap_until: datetime | None = None  # None with a cap: until lifted
    paused: frozenset[str] = field(default_factory=frozenset)
    modes: Mapping[str, tuple[str, bool]] = field(default_factory=dict)  # charger → (mode, this session only)


class OperatorStore:
    def __init__(self, db: sqlite_utils.Database, lock: threading.Lock) -> None:
        self.db = db
        self._lock = lock

    def save(self, state: OperatorState, now: datetime) -> None:
        cap = None if state.cap_kw is None else {
            "kw": state.cap_kw, "until": state.cap_until.isoformat() if state.cap_until else None}
        modes = {cid: {"mode": mode, "session": session} for cid, (mode, session) in sorted(state.modes.items())}
        rows = [("cap", json.dumps(cap), now.isoformat()), ("paused", json.dumps(sorted(state.paused)),
                                                            now.isoformat()),
                ("modes", json.dumps(modes), now.isoformat())]
        with self._lock, immediate(self.db.conn) as conn:
            conn.executemany(
                "INSERT INTO operator_state (key, value, updated_at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, updated_at = excluded.updated_at",
                rows,
            )

    def load(self, now: datetime, chargers: frozenset[str] | None = None) -> OperatorState:
        """What was saved; a cap already lapsed is none, and pauses of chargers no longer configured go."""
        with self._lock:
            rows = dict(self.db.conn.execute("SELECT key, value FROM operator_state").fetchall())
        cap = json.loads(rows["cap"]) if "cap" in rows else None
        cap_kw = cap_until = None
        if isinstance(cap, dict) and isinstance(cap.get("kw"), int | float):
            until = datetime.fromisoformat(cap["until"]) if isinstance(cap.get("until"), str) else None
            if until is not None and until.tzinfo is None:
                until = until.replace(tzinfo=UTC)
            if until is None or until > now:
                cap_kw, cap_until = float(cap["kw"]), until
        listed = json.loads(rows["paused"]) if "paused" in rows else []
        paused = frozenset(c for c in listed if isinstance(c, str) and (chargers is None or c in chargers))
        kept = json.loads(rows["modes"]) if "modes" in rows else {}
        modes = {cid: (str(m["mode"]), bool(m.get("session")))
                 for cid, m in (kept.items() if isinstance(kept, dict) else ())
                 if isinstance(m, dict) and isinstance(m.get("mode"), str) and (chargers is None or cid in chargers)}
        return OperatorState(cap_kw, cap_until, paused, modes)
