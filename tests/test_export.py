"""`gateway export`: the ledger, telemetry and limits sent of a real store as CSV with a header, filtered
by date; a missing, garbage or old store is one `error:` line and exit 2, never a traceback."""

from __future__ import annotations

import csv
import io
import sqlite3
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.domain import ChargerReading, ChargerStatus, LimitAck
from gateway.store import db as store_db
from gateway.store.decisions import DecisionStore, rows_for
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import ChargerSample, SiteSample, Telemetry

DAY1 = datetime(2030, 3, 1, 8, tzinfo=UTC)
DAY2 = DAY1 + timedelta(days=1)


def filled_store(path: Path) -> None:
    db = store_db.open_db(path)
    ledger = SessionLedger(db)
    for day, kwh in ((DAY1, 1000.0), (DAY2, 1010.0)):
        ledger.observe([
            ChargerReading("flat-12", day, ChargerStatus.CHARGING, {"L1": 16.0}, energy_kwh=kwh, session_id="tx-7"),
            ChargerReading("flat-12", day + timedelta(hours=2), ChargerStatus.CHARGING, energy_kwh=kwh + 7.25,
                           session_id="tx-7"),
            ChargerReading("flat-12", day + timedelta(hours=3), ChargerStatus.AVAILABLE),
        ])
    ledger.observe([ChargerReading("flat-3", DAY2, ChargerStatus.CHARGING, energy_kwh=5.0)])  # still charging
    Telemetry(db).write(DAY1, 1.0, SiteSample(12.5, 7.0, 40.0), {"flat-12": ChargerSample(16.0, 3.68, 16.0)})
    acks = [LimitAck("flat-12", 10.0, DAY1, True, 0.031, "Accepted")]
    DecisionStore(db).record(rows_for(DAY1, [("flat-12", 16.0, 10.0, "ev (e1:SIMPLE:level=2)")], acks))
    db.conn.close()


def export(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, list[dict[str, str]], str]:
    code = main(["export", *args])
    out, err = capsys.readouterr()
    return code, list(csv.DictReader(io.StringIO(out))), err


def test_sessions_csv_is_a_ledger_to_bill_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.sqlite"
    filled_store(path)
    code, rows, err = export(["sessions", "--csv", "--db", str(path)], capsys)
    assert code == 0 and err == ""
    assert [(r["charger_id"], r["session_id"], r["energy_kwh"]) for r in rows] == [
        ("flat-12", "tx-7", "7.25"), ("flat-12", "tx-7", "7.25"), ("flat-3", "", "0")]
    first = rows[0]
    assert first["started_at"] == "2030-03-01T08:00:00.000+00:00"
    assert first["stopped_at"] == "2030-03-01T11:00:00.000+00:00"
    assert (first["meter_start_kwh"], first["meter_stop_kwh"]) == ("1000", "1007.25")
    assert rows[2]["stopped_at"] == "", "an open session has no stop yet"
    code, rows, _ = export(["sessions", "--db", str(path), "--since", "2030-03-02"], capsys)
    assert code == 0 and [r["started_at"][:10] for r in rows] == ["2030-03-02", "2030-03-02"]
    code, rows, _ = export(["sessions", "--db", str(path), "--until", "2030-03-02T00:00+00:00"], capsys)
    assert code == 0 and len(rows) == 1


def test_telemetry_and_limits_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "gw.sqlite"
    filled_store(path)
    code, rows, _ = export(["telemetry", "--csv", "--db", str(path)], capsys)
    assert code == 0 and rows == [{"at": "2030-03-01T08:00:00.000+00:00", "span_s": "1.0", "site_kw": "12.5",
                                   "ev_kw": "7", "limit_kw": "40"}]
    code, rows, _ = export(["charger-telemetry", "--db", str(path)], capsys)
    assert code == 0 and [(r["charger_id"], r["current_a"], r["power_kw"]) for r in rows] == [
        ("flat-12", "16", "3.68")]
    code, rows, _ = export(["limits", "--db", str(path), "--since", "2030-03-01"], capsys)
    assert code == 0 and len(rows) == 1
    assert (rows[0]["new_a"], rows[0]["accepted"], rows[0]["latency_s"]) == ("10", "1", "0.031")
    assert rows[0]["reason"].startswith("ev (e1")
    code, rows, _ = export(["limits", "--db", str(path), "--since", "2030-03-02"], capsys)
    assert code == 0 and rows == []


def test_the_store_of_a_config_is_found(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "site.sqlite"
    filled_store(path)
    config = tmp_path / "site.toml"
    config.write_text('[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 63\n\n'
                      f'[store]\npath = "{path}"\n')
    code, rows, _ = export(["sessions", "--config", str(config)], capsys)
    assert code == 0 and len(rows) == 3


def one_error_line(code: int, err: str) -> str:
    assert code == 2
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    return lines[0]


def test_missing_garbage_old_and_newer_stores_are_one_line(tmp_path: Path,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    code, rows, err = export(["sessions", "--db", str(tmp_path / "none.sqlite")], capsys)
    assert "no such store" in one_error_line(code, err) and rows == []
    garbage = tmp_path / "garbage.sqlite"
    garbage.write_bytes(b"this is not a database, only words" * 200)
    code, _, err = export(["sessions", "--db", str(garbage)], capsys)
    assert "not a gateway store" in one_error_line(code, err)
    other = tmp_path / "other.sqlite"
    sqlite3.connect(other).execute("CREATE TABLE t (x)").connection.close()
    code, _, err = export(["telemetry", "--db", str(other)], capsys)
    assert "not a gateway store" in one_error_line(code, err)
    old = tmp_path / "old.sqlite"
    conn = sqlite3.connect(old, isolation_level=None)
    for statement in store_db.MIGRATIONS[0].split(";"):
        if statement.strip():
            conn.execute(statement)
    conn.execute("PRAGMA user_version = 1")
    conn.close()
    code, _, err = export(["sessions", "--db", str(old)], capsys)
    assert "older" in one_error_line(code, err)
    assert sqlite3.connect(old).execute("PRAGMA user_version").fetchone()[0] == 1, "export never migrates"
    conn = sqlite3.connect(old, isolation_level=None)
    conn.execute("PRAGMA user_version = 99")
    conn.close()
    code, _, err = export(["sessions", "--db", str(old)], capsys)
    assert "newer" in one_error_line(code, err)
    filled_store(tmp_path / "ok.sqlite")
    code, _, err = export(["sessions", "--db", str(tmp_path / "ok.sqlite"), "--since", "last tuesday"], capsys)
    assert "--since" in one_error_line(code, err)
    bad_config = tmp_path / "bad.toml"
    bad_config.write_text("[site]\nservice_breaker_a = -1\n")
    code, _, err = export(["sessions", "--config", str(bad_config)], capsys)
    assert code == 2 and all(line.startswith("error: ") for line in err.strip().splitlines())


@pytest.mark.slow
def test_export_from_the_command_line_while_a_writer_holds_the_store(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    filled_store(path)
    writer = store_db.open_db(path)  # a running gateway: WAL lets a reader in beside it
    try:
        writer.conn.execute("BEGIN IMMEDIATE")
        writer.conn.execute("INSERT INTO charging_sessions (charger_id, started_at, updated_at) "
                            "VALUES ('uncommitted', '2030-03-05T00:00:00.000+00:00', 'x')")
        done = subprocess.run([sys.executable, "-m", "gateway", "export", "sessions", "--csv", "--db", str(path)],
                              capture_output=True, text=True, timeout=30)
        writer.conn.execute("ROLLBACK")
    finally:
        writer.conn.close()
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("session,charger_id,") and len(lines) == 4
    assert "uncommitted" not in done.stdout
