"""The store's faults against the real program: `gateway run` in a subprocess with three Modbus chargers, a
service meter and (for the full disk) an OpenADR VTN in this process, watched from the chargers' side every
50 ms. A store locked by another process for 30 s, and a store on a real file system that fills up (a
small tmpfs; skipped where mounting is not permitted): the house load steps up meanwhile, an operator
caps the site, the VTN sends a curtailment. At every instant the site is under its breaker and back under
its limit within RECOVER_S, the curtailment is kept, nothing is lost once the fault ends, the fault is in
/api/status, /healthz and /metrics, and the log has one line when it starts and one when it ends."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import sqlite3
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from support.fault_store import (
    SimSite,
    alarm_everywhere,
    house_step_holds,
    http,
    settled,
    sim_site,
    site_config_lines,
    stored_rows,
)
from support.gateway_process import Gateway
from support.waiting import until

from gateway.sim.vtn import SimVtn

pytestmark = pytest.mark.slow


@pytest.fixture
async def site() -> AsyncIterator[SimSite]:
    async with sim_site() as s:
        yield s


def log_count(gateway: Gateway, needle: str) -> int:
    return sum(needle in line for line in list(gateway.lines))


async def settled_or_say_why(site: SimSite, gateway: Gateway) -> None:
    try:
        await settled(site)
    except AssertionError as exc:
        chargers = [(c.setpoint_a, c.enabled, c.in_failsafe, c.drawing_a) for c in site.chargers]
        raise AssertionError(f"{exc} chargers={chargers}\n{gateway.text()[-4000:]}") from None


def start(tmp_path: Path, lines: list[str]) -> Gateway:
    config = tmp_path / "site.toml"
    config.write_text("\n".join(lines))
    return Gateway(config)


async def test_a_store_locked_for_30_s_by_another_process(tmp_path: Path, site: SimSite) -> None:
    store = tmp_path / "gw.sqlite"
    with site_config_lines(site, store) as lines:
        gateway = start(tmp_path, lines)
    locker = sqlite3.connect(store, isolation_level=None, timeout=10)
    try:
        url = await gateway.status_url()
        await settled_or_say_why(site, gateway)
        locker.execute("BEGIN EXCLUSIVE")
        locked_at = time.monotonic()
        await asyncio.sleep(3.0)  # writes are waiting for the lock now
        await house_step_holds(site)
        code, body = await http("POST", url + "api/cap", {"kw": 35.0, "minutes": 30})
        assert code == 202 and json.loads(body)["stored"] is False, (code, body)
        await until(lambda: log_count(gateway, "alarm raised key=store.write") == 1, 15, "no alarm line")
        alarm = await alarm_everywhere(url, "store.write")
        assert "locked" in alarm["message"] and alarm["healthz"] == 503, alarm
        site.house_a = 15.0
        while time.monotonic() - locked_at < 30.0:  # the rest of the 30 s: the site stays in hand
            await asyncio.sleep(0.5)
        assert site.peak(locked_at) <= 80.0
        locker.execute("ROLLBACK")
        await until(lambda: log_count(gateway, "alarm cleared key=store.write") == 1, 20, "no recovery line")
        await until(lambda: bool(stored_rows(store, "SELECT 1 FROM operator_state WHERE key = 'cap' AND value "
                                                    "LIKE '%35.0%'")), 5, "the cap was not stored")
        code, _ = await http("GET", url + "healthz")
        assert code == 200
        text = await gateway.terminate()
    finally:
        locker.close()
        gateway.close()
    assert text.count("alarm raised key=store.write") == 1 and text.count("alarm cleared key=store.write") == 1
    assert "Traceback" not in text and "decision failed" not in text
    ats = [r[0] for r in stored_rows(store, "SELECT at FROM telemetry_site ORDER BY at")]
    assert max(b - a for a, b in itertools.pairwise(ats)) < 2.5, "no telemetry lost to the lock"


@contextlib.contextmanager
def small_filesystem(path: Path, size: str = "4m") -> Iterator[Path]:
    path.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                              capture_output=True, text=True)
    except FileNotFoundError:
        pytest.skip("no mount command")
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], capture_output=True)


def fill(path: Path) -> Path:
    filler = path / "filler"
    free = os.statvfs(path).f_bavail * os.statvfs(path).f_frsize
    with filler.open("wb") as f, contextlib.suppress(OSError):
        f.write(b"\0" * free)
        f.flush()
        os.fsync(f.fileno())
    return filler


@pytest.fixture
async def vtn() -> AsyncIterator[SimVtn]:
    sim = SimVtn(poll_s=1.0)
    await sim.start()
    yield sim
    await sim.stop()


async def test_a_full_file_system(tmp_path: Path, site: SimSite, vtn: SimVtn) -> None:
    with small_filesystem(tmp_path / "disk") as disk:
        store = disk / "gw.sqlite"
        with site_config_lines(site, store, vtn) as lines:
            gateway = start(tmp_path, lines)
        try:
            url = await gateway.status_url()
            await until(lambda: bool(vtn.vens), 10, "the gateway never registered")
            ven_id = next(iter(vtn.vens))
            await settled_or_say_why(site, gateway)
            filler = fill(disk)
            full_at = time.monotonic()
            await house_step_holds(site)
            event_id = vtn.add_event(ven_id, [("SIMPLE", "level", [2])],
                                     start=datetime.now(UTC) - timedelta(seconds=5), interval=timedelta(minutes=15))
            await until(lambda: any(e == event_id for _, e, _ in vtn.opt_responses), 10, "the VTN got no answer")
            status: dict[str, object] = {}

            async def ev_limit() -> float | None:
                _, body = await http("GET", url + "api/status")
                status.update(json.loads(body))
                site_status = status["site"]
                assert isinstance(site_status, dict)
                value = site_status["ev_limit_kw"]
                return float(value) if value is not None else None

            for _ in range(100):
                if await ev_limit() is not None:
                    break
                await asyncio.sleep(0.1)
            limit = await ev_limit()
            assert limit is not None, "the curtailment was not acted on"
            await asyncio.sleep(2.0)
            assert site.ev_kw() <= limit + 0.1, (site.ev_kw(), limit)
            code, body = await http("POST", url + "api/cap", {"kw": 40.0})
            assert code == 202 and json.loads(body)["stored"] is False, (code, body)
            await until(lambda: log_count(gateway, "alarm raised key=store.write") == 1, 15, "no alarm line")
            alarm = await alarm_everywhere(url, "store.write")
            assert "full" in alarm["message"] and alarm["healthz"] == 503, alarm
            while time.monotonic() - full_at < 20.0:
                assert site.ev_kw() <= limit + 0.1
                await asyncio.sleep(0.5)
            filler.unlink()  # the operator frees space
            await until(lambda: log_count(gateway, "alarm cleared key=store.write") == 1, 20, "no recovery line")
            assert stored_rows(store, "SELECT 1 FROM events WHERE event_id = ?", (event_id,)), "event stored"
            await until(lambda: bool(stored_rows(store, "SELECT 1 FROM operator_state WHERE key = 'cap' AND "
                                                        "value LIKE '%40.0%'")), 5, "the cap was not stored")
            text = await gateway.terminate()
        finally:
            gateway.close()
    assert text.count("alarm raised key=store.write") == 1 and text.count("alarm cleared key=store.write") == 1
    assert "Traceback" not in text and "decision failed" not in text, text[-3000:]
