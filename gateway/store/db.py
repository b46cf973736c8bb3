"""Opening the SQLite store: WAL journal, `synchronous` set on every connect, versioned migrations, and
the integrity check the gateway runs at start (and daily).

The schema version lives in `PRAGMA user_version`; `MIGRATIONS[i]` takes the file from version i to i+1
inside one transaction, so a crash mid-migration leaves the old version intact. Later issues append to
`MIGRATIONS`; they never edit an entry that has shipped. A file that cannot be opened is a `StoreError`
(one line: what is wrong and what to do), a damaged one a `StoreDamaged`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Literal

import sqlite_utils

Synchronous = Literal["OFF", "NORMAL", "FULL", "EXTRA"]
# How long one write waits for another process's lock before it fails (and is retried by its caller):
# short, so a store locked for long is noticed (the store.write alarm) within seconds.
BUSY_TIMEOUT_S = 5.0
INTEGRITY_PROBLEMS_SHOWN = 5


class StoreError(RuntimeError):
    """The store cannot be opened; the message is one line saying what is wrong and what to do."""


class StoreDamaged(StoreError):
    def __init__(self, path: str | Path, problems: list[str]) -> None:
        self.path = Path(path)
        self.problems = problems
        super().__init__(
            f"the store {path} is damaged ({'; '.join(problems[:2])}): nothing was changed; stop the gateway and "
            f"run `gateway store set-aside --db {path}` to move it aside and start afresh, or "
            f"`gateway store restore --db {path} BACKUP` to put a backup in its place (docs/store.md)")

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
    # 5: what each OCPP charger holds (kept across a restart: gateway/store/chargers.py) and the OpenADR 3
    # VEN's own state, event details and report backlog (gateway/store/vtn3.py). Builds before this version
    # made these tables themselves on open, hence IF NOT EXISTS: their files migrate as they are.
    """
    CREATE TABLE IF NOT EXISTS ocpp_chargers (
        charger_id TEXT PRIMARY KEY,
        record TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS oadr3_state (
        key TEXT PRIMARY KEY,
        value TEXT NOT NULL,
        updated_at TEXT NOT NULL
    );
    CREATE TABLE IF NOT EXISTS oadr3_events (
        event_id TEXT PRIMARY KEY,
        program_id TEXT NOT NULL,
        report_descriptors TEXT NOT NULL,
        next_report_at TEXT
    );
    CREATE TABLE IF NOT EXISTS oadr3_backlog (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id TEXT NOT NULL,
        program_id TEXT NOT NULL,
        payload_type TEXT NOT NULL,
        resource_name TEXT NOT NULL,
        start TEXT NOT NULL,
        duration_s REAL NOT NULL,
        value TEXT NOT NULL,
        sent_at TEXT,
        UNIQUE (event_id, payload_type, resource_name, start)
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
        raise StoreError(f"store schema version {version} is newer than this gateway ({len(MIGRATIONS)}): run the "
                         "newer gateway, or restore a backup made for this one (docs/store.md)")
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


def open_db(path: str | Path, *, synchronous: Synchronous = "FULL",
            busy_timeout_s: float = BUSY_TIMEOUT_S) -> sqlite_utils.Database:
    """Open (creating if needed) and migrate the store.

    FULL by default: an event acknowledged to the VTN must survive a power cut, not only a crash.
    The connection may be used from a worker thread (the async callers serialise access themselves).
    """
    try:
        conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None, timeout=busy_timeout_s)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot open the store {path}: {exc} (is its directory there and writable?)") from None
    try:
        conn.execute("PRAGMA journal_mode = WAL")
        # Per connection, not stored in the file: set it every time.
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        db = sqlite_utils.Database(conn)
        migrate(db)
    except sqlite3.DatabaseError as exc:
        conn.close()
        if isinstance(exc, sqlite3.OperationalError):
            raise StoreError(f"cannot open the store {path}: {exc}") from None
        raise StoreDamaged(path, [str(exc)]) from None
    except BaseException:
        conn.close()
        raise
    return db


def integrity_problems(conn: sqlite3.Connection, *, full: bool = False) -> list[str]:
    """What SQLite's own check finds wrong with the file (empty: sound). `quick_check` by default (it skips
    matching indexes to their tables, which is slow on a big file); `full` runs `integrity_check`."""
    pragma = "integrity_check" if full else "quick_check"
    try:
        rows = conn.execute(f"PRAGMA {pragma}({INTEGRITY_PROBLEMS_SHOWN})").fetchall()
    except sqlite3.DatabaseError as exc:
        if isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc):
            raise
        return [str(exc)]
    found = [str(r[0]) for r in rows]
    return [] if found == ["ok"] else found


def check_file(path: str | Path, *, full: bool = False) -> list[str]:
    """Open `path` read-only and check it; the problems found (empty: sound). A missing file is sound (the
    gateway creates it). Raises StoreError when the file cannot be read at all (permissions, a lock)."""
    p = Path(path)
    if not p.exists():
        return []
    if p.stat().st_size == 0:
        return []  # SQLite treats an empty file as an empty database
    try:
        conn = sqlite3.connect(f"file:{p}?mode=ro", uri=True, timeout=BUSY_TIMEOUT_S)
    except sqlite3.Error as exc:
        raise StoreError(f"cannot read the store {p}: {exc}") from None
    try:
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            raise StoreError(f"cannot read the store {p}: {exc}") from None
        except sqlite3.DatabaseError as exc:
            return [str(exc)]
        return integrity_problems(conn, full=full)
    finally:
        conn.close()
