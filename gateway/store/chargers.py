"""What each OCPP charger may be drawing, kept across a restart of the gateway.

A charger keeps the profiles it was sent when the gateway dies, so the process that comes back must know
them before it decides anything: the base profile (its purpose and fallback current), the most the live
profile may hold and until when (its lease), the strategy and abilities that work for the charger, and
what it was doing (status, transaction, when the session began). The driver writes a raise here *before*
sending it (a restart must never under-count what a charger was allowed) and everything else after,
off the control path. Its own table in the gateway's SQLite file (schema version 5), on a connection of its
own.
"""

from __future__ import annotations

import sqlite3
import threading
from datetime import datetime
from pathlib import Path

from gateway.records import ChargerRecord
from gateway.store.db import open_db

__all__ = ["ChargerBook", "ChargerRecord"]


class ChargerBook:
    """The table, thread-safe (writes come from worker threads); every call bounded by `busy_s`."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.lock = threading.Lock()

    @classmethod
    def open(cls, path: Path, busy_s: float = 2.0) -> ChargerBook:
        # A connection of its own on the store's file, opened (and migrated: its table is version 5) like the
        # others; FULL: a raise written ahead must survive a power cut too.
        return cls(open_db(path, synchronous="FULL", busy_timeout_s=busy_s).conn)

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
