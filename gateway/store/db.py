"""Opening the SQLite store: WAL journal, `synchronous` set on every connect, versioned migrations.

The schema version lives in `PRAGMA user_version`; `MIGRATIONS[i]` takes the file from version i to i+1
inside one transaction, so a crash mid-migration leaves the old version intact. Later issues append to
`MIGRATIONS`; they never edit an entry that has shipped.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import sqlite_utils

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]

MIGRATIONS: list[str] = [
    # 1: the VTN adapter's state.
    """
    CREATE TABLE registration (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        ven_id TEXT,
        registration_id TEXT,
        vtn_id TEXT,
        poll_s REAL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE events (
        event_id TEXT PRIMARY KEY,
        modification_number INTEGER NOT NULL,
        status TEXT NOT NULL,
        opt TEXT NOT NULL,
        opt_reason TEXT NOT NULL DEFAULT '',
        start_offset_s REAL NOT NULL,
        body TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE opt_overrides (
        event_id TEXT PRIMARY KEY,
        opt TEXT NOT NULL,
        reason TEXT NOT NULL,
        at TEXT NOT NULL
    );
    CREATE TABLE opt_outbox (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        modification_number INTEGER NOT NULL,
        opt TEXT NOT NULL,
        reason TEXT NOT NULL,
        opt_id TEXT NOT NULL,
        created_at TEXT NOT NULL,
        sent_at TEXT
    );
    CREATE TABLE report_requests (
        report_request_id TEXT PRIMARY KEY,
        report_specifier_id TEXT NOT NULL,
        granularity_s REAL NOT NULL,
        report_back_s REAL NOT NULL,
        r_ids TEXT NOT NULL,
        next_sample_at TEXT,
        created_at TEXT NOT NULL
    );
    CREATE TABLE report_backlog (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        report_request_id TEXT NOT NULL,
        report_specifier_id TEXT NOT NULL,
        r_id TEXT NOT NULL,
        measured_at TEXT NOT NULL,
        value REAL NOT NULL,
        sent_at TEXT,
        UNIQUE (report_request_id, r_id, measured_at)
    );
    CREATE INDEX report_backlog_unsent ON report_backlog (sent_at, id);
    """,
    # 2: the control loop's limits sent (gateway.store.decisions).
    """
    CREATE TABLE limits_sent (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        decided_at TEXT NOT NULL,
        charger_id TEXT NOT NULL,
        old_a REAL NOT NULL,
        new_a REAL NOT NULL,
        reason TEXT NOT NULL,
        accepted INTEGER,
        latency_s REAL,
        detail TEXT NOT NULL DEFAULT ''
    );
    CREATE INDEX limits_sent_charger ON limits_sent (charger_id, id);
    """,
    # 3: the charging-session ledger (gateway.store.sessions) and telemetry (gateway.store.telemetry).
    """
    CREATE TABLE charging_sessions (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        charger_id TEXT NOT NULL,
        session_id TEXT,
        started_at TEXT NOT NULL,
        stopped_at TEXT,
        meter_start_kwh REAL,
        meter_stop_kwh REAL,
        energy_kwh REAL NOT NULL DEFAULT 0,
        updated_at TEXT NOT NULL
    );
    CREATE UNIQUE INDEX charging_sessions_open ON charging_sessions (charger_id) WHERE stopped_at IS NULL;
    CREATE INDEX charging_sessions_started ON charging_sessions (started_at);
    CREATE TABLE telemetry_site (
        at REAL NOT NULL,
        span_s REAL NOT NULL,
        site_kw REAL,
        ev_kw REAL,
        limit_kw REAL
    );
    CREATE INDEX telemetry_site_at ON telemetry_site (at);
    CREATE TABLE telemetry_chargers (
        at REAL NOT NULL,
        span_s REAL NOT NULL,
        charger_id TEXT NOT NULL,
        current_a REAL,
        power_kw REAL,
        limit_a REAL
    );
    CREATE INDEX telemetry_chargers_at ON telemetry_chargers (at);
    CREATE INDEX telemetry_chargers_charger ON telemetry_chargers (charger_id, at);
    """,
    # 4: what an operator set over the status endpoint (a site cap, paused chargers), kept over a restart.
    """
    CREATE TABLE operator_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    """,
]


@contextmanager
def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
    """One write transaction (BEGIN IMMEDIATE: the write lock is taken at once), rolled back on any error.

    The caller holds its connection's lock: the stores share one connection between threads."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def schema_version(db: sqlite_utils.Database) -> int:
    return int(db.execute("PRAGMA user_version").fetchone()[0])


def migrate(db: sqlite_utils.Database) -> int:
    """Bring the file to the newest schema; return the version it is at."""
    version = schema_version(db)
    if version > len(MIGRATIONS):
        raise RuntimeError(f"store schema version {version} is newer than this gateway ({len(MIGRATIONS)})")
    conn = db.conn
    for target, script in enumerate(MIGRATIONS[version:], start=version + 1):
        # executescript would commit on its own; run statement by statement inside one transaction.
        conn.execute("BEGIN IMMEDIATE")
        try:
            for statement in script.split(";"):
                if statement.strip():
                    conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {target}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return schema_version(db)


def open_db(path: str | Path, *, synchronous: Synchronous = "FULL") -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the store.

    FULL by default: an event acknowledged to the VTN must survive a power cut, not only a crash.
    The connection may be used from a worker thread (the async callers serialise access themselves).
    """
    conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=10.0)
    conn.execute("PRAGMA journal_mode = WAL")
    # Per connection, not stored in the file: set it every time.
    conn.execute(f"PRAGMA synchronous = {synchronous}")
    conn.execute("PRAGMA foreign_keys = ON")
    db = sqlite_utils.Database(conn)
    migrate(db)
    return db
