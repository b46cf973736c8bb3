"""What each OCPP charger may be drawing, kept across a restart of the gateway.

A charger keeps the profiles it was sent when the gateway dies, so the process that comes back must know
them before it decides anything: the base profile (its purpose and fallback current), the most the live
profile may hold and until when (its lease), the strategy and abilities that work for the charger, and
what it was doing (status, transaction, when the session began). The driver writes a raise here *before*
sending it (a restart must never under-count what a charger was allowed) and everything else after,
off the control path. Its own table in the gateway's SQLite file, on a connection of its own.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

SCHEMA = """
CREATE TABLE IF NOT EXISTS ocpp_chargers (
    charger_id TEXT PRIMARY KEY,
    record TEXT NOT NULL,
    updated_at TEXT NOT NULL
)
"""


def _time(text: object) -> datetime | None:
    return datetime.fromisoformat(text) if isinstance(text, str) else None


@dataclass(frozen=True, slots=True)
class ChargerRecord:
    charger_id: str
    strategy: str | None = None  # the label of the strategy that last worked
    units: tuple[str, ...] = ()  # rate units it said it takes (empty: never asked)
    max_stack_level: int | None = None
    base_purpose: str | None = None  # a base profile was accepted with this purpose (None: never)
    fallback_a: float | None = None  # what the base holds
    live_a: float | None = None  # the most the live profile may hold ...
    live_until: datetime | None = None  # ... until then (None with live_a: no end, an unleased slot)
    live_tx: str | None = None  # the transaction a TxProfile live limit is for
    status: str | None = None  # ChargerStatus value last reported
    transactions: dict[int, str] = field(default_factory=dict)  # connector/EVSE → transaction id
    session_started: datetime | None = None

    def may_draw(self, now: datetime, max_a: float) -> float:
        """The most the charger may be drawing on what it holds, as far as this record knows: its live
        limit while leased (a TxProfile's only while its transaction runs), else its base's fallback,
        else (no base known) its maximum."""
        base = self.fallback_a if self.base_purpose is not None and self.fallback_a is not None else max_a
        live = self.live_a if self.live_a is not None and (self.live_until is None or now < self.live_until) else None
        if live is not None and self.live_tx is not None and self.live_tx not in self.transactions.values():
            live = None  # a TxProfile ends with its session ("": none had begun): the base holds
        return min(max_a, base if live is None else live)

    def to_json(self) -> str:
        return json.dumps({
            "strategy": self.strategy, "units": list(self.units), "max_stack_level": self.max_stack_level,
            "base_purpose": self.base_purpose, "fallback_a": self.fallback_a, "live_a": self.live_a,
            "live_until": self.live_until.isoformat() if self.live_until else None, "live_tx": self.live_tx,
            "status": self.status, "transactions": {str(k): v for k, v in self.transactions.items()},
            "session_started": self.session_started.isoformat() if self.session_started else None,
        })

    @classmethod
    def from_json(cls, charger_id: str, text: str) -> ChargerRecord:
        data = json.loads(text)
        return cls(
            charger_id=charger_id, strategy=data.get("strategy"), units=tuple(data.get("units") or ()),
            max_stack_level=data.get("max_stack_level"), base_purpose=data.get("base_purpose"),
            fallback_a=data.get("fallback_a"), live_a=data.get("live_a"), live_until=_time(data.get("live_until")),
            live_tx=data.get("live_tx"), status=data.get("status"),
            transactions={int(k): str(v) for k, v in (data.get("transactions") or {}).items()},
            session_started=_time(data.get("session_started")),
        )


class ChargerBook:
    """The table, thread-safe (writes come from worker threads); every call bounded by `busy_s`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, busy_s: float = 2.0) -> ChargerBook:
        db = sqlite3.connect(path, timeout=busy_s, check_same_thread=False, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # a raise written ahead must survive a power cut too
        db.execute(SCHEMA)
        return cls(db)

    def load(self) -> dict[str, ChargerRecord]:
        out: dict[str, ChargerRecord] = {}
        with self.lock:
            rows = self.db.execute("SELECT charger_id, record FROM ocpp_chargers").fetchall()
        for charger_id, text in rows:
            try:
                out[charger_id] = ChargerRecord.from_json(charger_id, text)
            except (ValueError, TypeError, KeyError):
                continue  # a record we cannot read counts as unknown: its charger at its maximum
        return out

    def save(self, records: list[ChargerRecord], now: datetime) -> None:
        with self.lock:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                self.db.executemany(
                    "INSERT INTO ocpp_chargers (charger_id, record, updated_at) VALUES (?, ?, ?) ON CONFLICT"
                    "(charger_id) DO UPDATE SET record = excluded.record, updated_at = excluded.updated_at",
                    [(r.charger_id, r.to_json(), now.isoformat()) for r in records])
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise

    def close(self) -> None:
        with self.lock:
            self.db.close()
