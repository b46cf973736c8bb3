"""The store when the file cannot take writes or is damaged.

The VTN adapter's store, with another connection holding the write lock (as another process would):
events, report samples and what was sent are held in memory and read back, the fault is in WriteHealth,
and `flush()` writes them once the lock is gone; an operator's opt override is refused with
StoreWriteError. A damaged file (a broken header, 8 KiB overwritten mid-file) is found at open and by
the integrity check; `gateway run` refuses it with one line and exit 2; `gateway store` checks it, sets
it aside, restores a backup and backs up a live store."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.waiting import stopped

from gateway.cli import main
from gateway.domain import Event, Interval, Signal, SignalName, SignalType
from gateway.store import db as store_db
from gateway.store.health import WriteHealth
from gateway.store.telemetry import ChargerSample, Sample, SiteSample, Telemetry
from gateway.store.vtn import ReportRequest, StoreWriteError, VenStore

NOW = datetime(2030, 6, 1, 12, tzinfo=UTC)


def event(event_id: str = "e1") -> Event:
    return Event(event_id=event_id, modification_number=0, dtstart=NOW, duration=timedelta(hours=1),
                 signals=(Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(hours=1), 2.0),)),))


@contextmanager
def locked(path: Path) -> Iterator[None]:
    """Another process's connection holding the store's write lock."""
    other = sqlite3.connect(path, isolation_level=None)
    other.execute("BEGIN EXCLUSIVE")
    try:
        yield
    finally:
        other.execute("ROLLBACK")
        other.close()


def ven_store(path: Path) -> VenStore:
    return VenStore(store_db.open_db(path, busy_timeout_s=0.05), WriteHealth())


def test_an_event_the_store_cannot_take_is_held_read_back_and_written_later(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = ven_store(path)
    try:
        with locked(path):
            store.save_events([event()], NOW, {"e1": "rules"})  # no exception: the VEN acts on it and answers
            assert set(store.events()) == {"e1"} and store.opt_reasons()["e1"] == "rules"
            trouble = store.health.trouble()
            assert trouble is not None and trouble.whats == ("events",) and trouble.precious
            assert "locked" in trouble.error
            assert store.flush() is False and store.holding()
        assert store.flush() is True and not store.holding()
        assert store.health.trouble() is None
    finally:
        store.close()
    again = VenStore.open(path)
    try:
        assert again.events()["e1"] == event()
    finally:
        again.close()


def test_report_samples_and_what_was_sent_are_held_so_nothing_is_lost_or_sent_twice(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = ven_store(path)
    try:
        rr = ReportRequest("rr", "spec", 1.0, 1.0, ("p",))
        store.save_report_request(rr, NOW)
        store.add_readings(rr, [("p", 1.0)], NOW, NOW + timedelta(seconds=1))
        (first,) = store.unsent_readings()
        with locked(path):
            store.add_readings(rr, [("p", 2.0)], NOW + timedelta(seconds=1), NOW + timedelta(seconds=2))
            assert store.report_requests()[0].next_sample_at == NOW + timedelta(seconds=2), "the clock moved on"
            store.mark_readings_sent([first.id], NOW)  # the VTN has it: not again
            assert store.unsent_readings() == []
            assert store.prune_readings(NOW - timedelta(days=1)) == 0
        assert store.flush()
        assert [r.value for r in store.unsent_readings()] == [2.0], "the held sample is in the backlog now"
    finally:
        store.close()


def test_an_operator_override_the_store_cannot_take_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = ven_store(path)
    try:
        store.save_events([event()], NOW)
        with locked(path), pytest.raises(StoreWriteError, match="not stored, so not changed"):
            store.set_override("e1", None, "", NOW)
    finally:
        store.close()


def a_store_with_rows(path: Path, rows: int = 4000) -> None:
    tel = Telemetry.open(path)
    try:
        tel.write_many([Sample(NOW + timedelta(seconds=s), 1.0, SiteSample(1.0, 2.0, 3.0), {
            "a": ChargerSample(16.0, 3.7, 16.0), "b": ChargerSample(8.0, 1.8, 8.0)}) for s in range(rows)])
        tel.db.conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        tel.close()


def overwrite(path: Path, offset: int, size: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        f.write(os.urandom(size))


def test_a_damaged_header_and_a_damaged_middle_are_found(tmp_path: Path) -> None:
    header = tmp_path / "header.sqlite"
    a_store_with_rows(header, 400)
    overwrite(header, 0, 100)
    assert store_db.check_file(header)
    with pytest.raises(store_db.StoreDamaged, match="set-aside"):
        store_db.open_db(header)

    middle = tmp_path / "middle.sqlite"
    a_store_with_rows(middle)
    size = middle.stat().st_size
    assert size > 64 * 1024
    overwrite(middle, size // 2 // 4096 * 4096, 8192)  # 8 KiB over two pages mid-file
    problems = store_db.check_file(middle)
    assert problems, "the integrity check finds it"
    assert store_db.check_file(tmp_path / "missing.sqlite") == []


def run_gateway(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "gateway", "run", "--config", str(config)], capture_output=True,
                          text=True, timeout=60, cwd=config.parent)


@pytest.mark.slow
def test_gateway_run_refuses_a_damaged_store_with_one_line(tmp_path: Path) -> None:
    store = tmp_path / "gw.sqlite"
    a_store_with_rows(store, 400)
    overwrite(store, 0, 100)
    config = tmp_path / "site.toml"
    config.write_text("\n".join([
        "[site]", 'wiring = "three-phase-400/230"', "service_breaker_a = 63", "",
        "[[chargers]]", 'id = "cp-1"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"', "max_a = 32", "",
        "[ocpp]", "port = 0", "", "[status]", "port = 0", "", "[store]", f'path = "{store}"', ""]))
    done = run_gateway(config)
    assert done.returncode == 2, done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: the store ") and "damaged" in lines[0], done.stderr
    assert "gateway store set-aside" in lines[0] and "gateway store restore" in lines[0]

    # What the line says to do works: set it aside, and the gateway starts afresh.
    assert main(["store", "set-aside", "--db", str(store)]) == 0
    assert not store.exists() and list(tmp_path.glob("gw.sqlite.damaged-*"))
    assert main(["store", "check", "--config", str(config)]) == 2  # no file yet: the gateway makes it


def test_gateway_store_checks_backs_up_and_restores(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = tmp_path / "gw.sqlite"
    a_store_with_rows(store, 400)
    live = sqlite3.connect(store)  # the gateway is running: backup and check are safe beside it
    try:
        assert main(["store", "check", "--db", str(store)]) == 0
        assert "sound (schema version" in capsys.readouterr().out
        backup = tmp_path / "backup.sqlite"
        assert main(["store", "backup", "--db", str(store), str(backup)]) == 0
        assert main(["store", "backup", "--db", str(store), str(backup)]) == 2  # never over an existing file
        assert "already there" in capsys.readouterr().err
    finally:
        live.close()
    overwrite(store, 0, 100)
    assert main(["store", "check", "--db", str(store)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "damaged" in err[0] and "restore" in err[0]
    assert main(["store", "restore", "--db", str(store), str(tmp_path / "nope.sqlite")]) == 2
    assert main(["store", "restore", "--db", str(store), str(backup)]) == 0
    assert "restored from" in capsys.readouterr().out
    assert main(["store", "check", "--db", str(store)]) == 0
    assert len(Telemetry.open(store).site()) == 400
    with pytest.raises(SystemExit):  # no backup named: argparse's one line and exit 2
        main(["store", "restore", "--db", str(store)])


async def test_the_daily_check_raises_store_integrity_while_running(tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    from support.runtime import running

    from gateway.config import parse_config
    from gateway.runtime import recorder

    config = parse_config({
        "site": {"wiring": "three-phase-400/230", "service_breaker_a": 63},
        "chargers": [{"id": "a", "protocol": "ocpp2.0.1", "phases": "L1-L2-L3", "max_a": 32}],
        "ocpp": {"port": 0}, "control": {"tick_s": 0.1, "charger_stale_s": 10},
        "store": {"path": str(tmp_path / "gw.sqlite")},
    })
    found: list[str] = []
    monkeypatch.setattr(recorder, "INTEGRITY_EVERY", timedelta(0))  # every tick, not daily
    monkeypatch.setattr(recorder, "integrity_problems", lambda conn: list(found))
    runtime, task = await running(config)
    try:
        await asyncio.sleep(0.5)
        assert not runtime.alarms.active("store.integrity")
        found.append("*** in database main *** Page 7: btreeInitPage() returns error code 11")
        for _ in range(50):
            if runtime.alarms.active("store.integrity"):
                break
            await asyncio.sleep(0.1)
        alarm = runtime.alarms.get("store.integrity")
        assert alarm is not None and alarm.severity == "critical" and "set-aside" in alarm.action
        found.clear()
        for _ in range(50):
            if not runtime.alarms.active("store.integrity"):
                break
            await asyncio.sleep(0.1)
        assert not runtime.alarms.active("store.integrity")
    finally:
        runtime.stop()
        await stopped(task, 20)


def test_a_failure_healed_by_a_later_write_clears_without_anything_held(tmp_path: Path) -> None:
    path = tmp_path / "gw.sqlite"
    store = ven_store(path)
    try:
        with locked(path):
            store.save_events([event()], NOW)
        store.save_events([event()], NOW)  # the same event again, stored directly: nothing is held now
        assert not store.holding() and store.health.trouble() is not None
        assert store.flush() and store.health.trouble() is None, "what the runtime's retry does clears it"
    finally:
        store.close()
