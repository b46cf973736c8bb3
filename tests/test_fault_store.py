"""Faults of the store against real peers: the runtime with three Modbus chargers and a service meter on
loopback, watched from the chargers' side every 50 ms. The house load steps up while the store is locked
by another process (a second connection holding BEGIN EXCLUSIVE) or cannot take writes (the disk is full:
every write raises "database or disk is full"): the site must come back under its limit as fast as it does
with a healthy store and never go over the breaker, the decisions go on, an event from the VTN is acted on
and answered, an operator's cap is in force and its answer says it is not stored, the fault is in
/api/status, /healthz and /metrics, logged once when it starts and once when it ends, and everything held
in memory reaches the file once the store takes writes again."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.fault_store import (
    SimSite,
    alarm_everywhere,
    alarm_lines,
    house_step_holds,
    http,
    no_tracebacks,
    settled,
    sim_site,
    site_config_lines,
    start_runtime,
    stored_rows,
)
from support.waiting import stopped, until

from gateway.sim.vtn import SimVtn
from gateway.store import db as store_db


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    async with sim_site() as s:
        yield s


@pytest.mark.slow
async def test_a_store_locked_by_another_process_never_holds_up_a_decision(
        tmp_path: Path, site: SimSite, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    store = tmp_path / "gw.sqlite"
    with site_config_lines(site, store) as lines:
        runtime, task, url = await start_runtime(tmp_path, lines)
    locker = sqlite3.connect(store, isolation_level=None, timeout=10)
    try:
        await settled(site)
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the store's write lock
        locked_at = time.monotonic()
        decisions = runtime.decisions
        await asyncio.sleep(1.5)  # a write is under way and waits for the lock now
        await house_step_holds(site)
        assert runtime.decisions > decisions + 10, "the decisions went on"
        code, body = await http("POST", url + "api/cap", {"kw": 30.0, "minutes": 60})
        assert code == 202 and json.loads(body)["stored"] is False, (code, body)
        assert runtime.operator_cap_kw == 30.0, "in force all the same"
        await until(lambda: runtime.alarms.active("store.write"), 15, "no store.write alarm")
        alarm = await alarm_everywhere(url, "store.write")
        assert "locked" in alarm["message"] and alarm["action"], alarm
        assert alarm["healthz"] == 503, "an operator's change held only in memory is critical"
        assert time.monotonic() - locked_at < 15
        locker.execute("ROLLBACK")  # the other process lets go
        await until(lambda: not runtime.alarms.active("store.write"), 20, "store.write never cleared")
        await until(lambda: bool(stored_rows(store, "SELECT 1 FROM operator_state WHERE key = 'cap' AND value LIKE "
                                                    "'%30.0%'")), 5, "the cap never reached the store")
        code, _ = await http("GET", url + "healthz")
        assert code == 200
    finally:
        locker.close()
        runtime.stop()
        await stopped(task, 20)
    # Nothing the loop sampled was lost: telemetry covers the lock without a gap.
    ats = [r[0] for r in stored_rows(store, "SELECT at FROM telemetry_site ORDER BY at")]
    gaps = [b - a for a, b in itertools.pairwise(ats)]
    assert ats and max(gaps) < 2.5, max(gaps)
    assert alarm_lines(caplog, "store.write") == (1, 1)
    no_tracebacks(caplog)


class DiskFull:
    """Every write transaction of the store fails as SQLite fails on a full disk, while `full` is set."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.full = False
        real = store_db.immediate

        @contextmanager
        def immediate(conn: sqlite3.Connection) -> Iterator[sqlite3.Connection]:
            if self.full:
                raise sqlite3.OperationalError("database or disk is full")
            with real(conn) as c:
                yield c

        for module in ("vtn", "decisions", "sessions", "telemetry", "operator"):
            monkeypatch.setattr(f"gateway.store.{module}.immediate", immediate)


@pytest.fixture
async def vtn() -> AsyncIterator[SimVtn]:
    sim = SimVtn(poll_s=1.0)
    await sim.start()
    yield sim
    await sim.stop()


@pytest.mark.slow
async def test_a_full_disk_loses_no_event_and_no_operator_write(
        tmp_path: Path, site: SimSite, vtn: SimVtn, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    disk = DiskFull(monkeypatch)
    store = tmp_path / "gw.sqlite"
    with site_config_lines(site, store, vtn) as lines:
        runtime, task, url = await start_runtime(tmp_path, lines)
    try:
        await until(lambda: bool(vtn.vens), 10, "the gateway never registered")
        ven_id = next(iter(vtn.vens))
        await settled(site)
        disk.full = True
        await house_step_holds(site)
        # A curtailment arrives while nothing can be written: acted on, answered, held, stored later.
        event_id = vtn.add_event(ven_id, [("SIMPLE", "level", [2])], start=datetime.now(UTC) - timedelta(seconds=5),
                                 interval=timedelta(minutes=15))
        await until(lambda: any(e == event_id for _, e, _ in vtn.opt_responses), 10, "the VTN got no answer")
        await until(lambda: runtime.last is not None and runtime.last.ev_limit_kw is not None, 10,
                    "the event was not acted on")
        ev_limit = runtime.last.ev_limit_kw if runtime.last is not None else None
        assert ev_limit is not None
        await asyncio.sleep(2.0)
        assert site.ev_kw() <= ev_limit + 0.1, (site.ev_kw(), ev_limit)
        assert not stored_rows(store, "SELECT 1 FROM events WHERE event_id = ?", (event_id,)), "the disk is full"
        code, body = await http("POST", url + "api/evses/mb-0/pause")
        assert code == 202 and "not stored" in json.loads(body)["warning"], (code, body)
        await until(lambda: runtime.alarms.active("store.write"), 10, "no store.write alarm")
        alarm = await alarm_everywhere(url, "store.write")
        assert "full" in alarm["message"] and alarm["healthz"] == 503, alarm
        await asyncio.sleep(3.0)  # the retries go on quietly
        disk.full = False
        await until(lambda: not runtime.alarms.active("store.write"), 20, "store.write never cleared")
        assert stored_rows(store, "SELECT 1 FROM events WHERE event_id = ?", (event_id,)), "the event was stored"
        await until(lambda: bool(stored_rows(store, "SELECT 1 FROM operator_state WHERE key = 'paused' AND value "
                                                    "LIKE '%mb-0%'")), 5, "the pause never reached the store")
        assert site.ev_kw() <= ev_limit + 0.1
    finally:
        runtime.stop()
        await stopped(task, 20)
    assert alarm_lines(caplog, "store.write") == (1, 1)
    no_tracebacks(caplog)
