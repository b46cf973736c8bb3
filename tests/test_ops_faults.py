"""End to end as an operator sees it: the demo site (a real VTN, OCPP and Modbus chargers, a Modbus meter)
against the runtime and its status endpoint, through a curtailment, the meter going down and coming back,
and the VTN going down. At each stage `/api/status`, `/api/alarms`, `/healthz`, `/metrics` and the page
agree on what is wrong, each alarm is logged once raised and once cleared, and headless Chromium (when
installed) takes a screenshot of the page: at start, during the curtailment, with the meter down and with
the VTN down. Screenshots go to $GATEWAY_SCREENSHOTS when set (else the test's temporary directory).
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from support.waiting import stopped, until

from gateway.commands.demo import with_token_and_zone
from gateway.config import load_config
from gateway.runtime.loop import Runtime
from gateway.sim.demo_site import DemoSite

TOKEN = "ops-token-0123456789abcdef"


async def wait_for(cond: Callable[[], object], timeout_s: float = 15.0, what: str = "condition") -> None:
    """The suite's `until`, with this module's longer default (a whole site runs in the process)."""
    await until(cond, timeout_s, what)


class Site:
    def __init__(self, demo: DemoSite, runtime: Runtime, http: aiohttp.ClientSession, shots: Path) -> None:
        self.demo, self.runtime, self.http, self.shots = demo, runtime, http, shots
        assert runtime.status_url is not None
        self.url = runtime.status_url

    async def get(self, path: str) -> tuple[int, Any]:
        async with self.http.get(self.url + path) as response:
            text = await response.text()
            kind = response.content_type
            return response.status, json.loads(text) if kind == "application/json" else text

    async def alarm_keys(self) -> set[str]:
        _, body = await self.get("api/alarms")
        return {a["key"] for a in body["alarms"]}

    async def screenshot(self, name: str, window: str = "15m", size: str = "1100,2000") -> Path | None:
        binary = shutil.which("chromium") or shutil.which("chromium-browser")
        if binary is None:
            return None
        shot = self.shots / f"{name}.png"
        process = await asyncio.create_subprocess_exec(
            binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            f"--window-size={size}", f"--screenshot={shot}", f"{self.url}?window={window}",
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL)
        await asyncio.wait_for(process.wait(), 120)
        assert process.returncode == 0 and shot.stat().st_size > 20_000, name
        return shot


@pytest.fixture
async def site(tmp_path: Path) -> AsyncIterator[Site]:
    demo = DemoSite(speed=10.0, curtail_after_s=60.0)  # the curtailment starts 6 s after registration
    await demo.start_peers()
    path = tmp_path / "demo.toml"
    text = demo.config_text(tmp_path / "demo.sqlite", tick_s=0.5)
    path.write_text(with_token_and_zone(text, TOKEN, "Europe/Berlin"))
    runtime = Runtime(load_config(path))
    task = asyncio.create_task(runtime.run())
    shots = Path(os.environ.get("GATEWAY_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert runtime.ocpp is not None
        await demo.start_chargers(f"ws://127.0.0.1:{runtime.ocpp.server.port}/ocpp")
        async with aiohttp.ClientSession() as http:
            yield Site(demo, runtime, http, shots)
    finally:
        runtime.stop()
        await stopped(task, 15)
        await demo.stop()


def raised_cleared(caplog: pytest.LogCaptureFixture, key: str) -> tuple[int, int]:
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.alarm"]
    return (sum(line.startswith(f"alarm raised key={key} ") for line in lines),
            sum(line.startswith(f"alarm cleared key={key} ") for line in lines))


async def test_an_operator_sees_the_curtailment_the_meter_down_and_the_vtn_down(
    site: Site, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rt, demo = site.runtime, site.demo

    # ---- start: all up, healthy, every charger on the page with what it said it is
    await wait_for(lambda: rt.ven is not None and rt.ven.reachable and rt.last is not None
                   and all(cid in rt.readings for cid in ("cp-1", "mb-1")), what="gateway up")
    await wait_for(lambda: all(rt.acks.get(c) is not None for c in ("cp-1", "mb-1")), what="first limits acked")
    code, health = await site.get("healthz")
    assert code == 200 and health["status"] in ("ok", "degraded"), health
    _, status = await site.get("api/status")
    assert status["vtn"]["reachable"] is True and status["meters"][0]["state"] == "fresh"
    assert status["site"]["timezone"] == "Europe/Berlin" and status["site"]["load_state"] == "measured"
    cp1 = next(e for e in status["evses"] if e["id"] == "cp-1")
    assert cp1["online"] and cp1["vendor"] and cp1["model"] and cp1["last_seen"]
    await site.screenshot("1-start")

    # ---- a curtailment: the reason in words with the event, its level and its end (site time)
    await wait_for(lambda: rt.last is not None and rt.last.ev_limit_kw is not None, 20, "curtailment")
    await wait_for(lambda: any("demo-curtail" in r for r in (rt.last.reasons.values() if rt.last else ())), 10,
                   "a charger curtailed")
    page = (await site.get(""))[1]
    assert "curtailed: DR event demo-curtail level 2 until " in page
    assert "CET" in page or "CEST" in page  # the site's zone, not UTC
    _, status = await site.get("api/status")
    curtail = next(e for e in status["events"] if e["id"] == "demo-curtail")
    assert curtail["phase"] == "active" and curtail["timeline"][0]["ev_kw"] == pytest.approx(status["site"]
                                                                                            ["ev_limit_kw"], abs=0.01)
    await wait_for(lambda: any(r.getMessage().startswith("site limit kw=") and "demo-curtail" in r.getMessage()
                               for r in caplog.records), 5, "a line for the site limit's change with its cause")
    await site.screenshot("2-curtailed")
    await site.screenshot("2-curtailed-phone", size="390,1800")  # a phone's width: one column

    # ---- the meter goes down: no load shown as measured, a critical alarm, healthz 503, metrics agree
    port = demo.meter.port
    await demo.meter.stop()
    await wait_for(lambda: rt.alarms.active("meter.grid.stale"), 20, "meter.grid.stale raised")
    code, health = await site.get("healthz")
    assert code == 503 and health["status"] == "failing"
    assert any(r["id"] == "meter.grid.stale" for r in health["reasons"]), health
    _, status = await site.get("api/status")
    assert status["site"]["load_kw"] is None and status["site"]["load_state"] in ("stale", "unreachable")
    assert status["meters"][0]["state"] in ("stale", "unreachable") and status["meters"][0]["stale_since"]
    _, alarms = await site.get("api/alarms")
    stale = next(a for a in alarms["alarms"] if a["key"] == "meter.grid.stale")
    assert stale["severity"] == "critical" and stale["action"] and stale["since"]
    _, metrics = await site.get("metrics")
    assert 'gateway_meter_stale{meter="grid"} 1.0' in metrics
    assert 'gateway_component_up{component="meter",id="grid"} 0.0' in metrics
    # absent, not an old or assumed figure
    assert not any(line.startswith("gateway_site_load_watts ") for line in metrics.splitlines())
    page = (await site.get(""))[1]
    assert "unknown: meter" in page and "meter.grid.stale" in page
    await site.screenshot("3-meter-down")
    await demo.meter.start(port)
    await wait_for(lambda: not rt.alarms.active("meter.grid.stale"), 20, "meter.grid.stale cleared")
    assert raised_cleared(caplog, "meter.grid.stale") == (1, 1)

    # ---- the VTN goes down: not registered, not reachable, a warning (degraded, still 200)
    await demo.vtn.stop()
    await wait_for(lambda: rt.alarms.active("vtn.unreachable"), 20, "vtn.unreachable raised")
    await wait_for(lambda: not any(a.severity == "critical" for a in rt.alarms.in_force()), 20, "no critical alarm")
    code, health = await site.get("healthz")
    assert code == 200 and health["status"] == "degraded", health
    assert any(r["id"] == "vtn.unreachable" for r in health["reasons"])
    _, status = await site.get("api/status")
    vtn = status["vtn"]
    assert vtn["reachable"] is False and vtn["registered"] is False and vtn["failing_since"] and vtn["last_error"]
    assert vtn["state"] == "degraded"
    _, metrics = await site.get("metrics")
    assert "gateway_vtn_registered 0.0" in metrics
    assert 'gateway_component_up{component="vtn",id="ven-1"} 0.0' in metrics
    assert 'gateway_vtn_polls_total{result="unreachable"}' in metrics
    assert 'gateway_alarm{key="vtn.unreachable",severity="warning"} 1.0' in metrics
    page = (await site.get(""))[1]
    assert "vtn.unreachable" in page and "unreachable, registered: no" in page
    await site.screenshot("4-vtn-down", window="1h")
    assert raised_cleared(caplog, "vtn.unreachable") == (1, 0)


async def test_the_page_stays_live_over_server_sent_events(site: Site) -> None:
    async with site.http.get(site.url + "api/stream?window=15m") as response:
        assert response.status == 200 and response.content_type == "text/event-stream"
        seen: list[dict[str, Any]] = []
        async for line in response.content:
            if line.startswith(b"data: "):
                seen.append(json.loads(line[6:]))
                if len(seen) == 2:
                    break
    assert all('id="chart"' in s["html"] and s["title"].startswith("demo site") for s in seen)
    assert seen[0]["health"] in ("ok", "degraded", "failing")
    _, js = await site.get("static/page.js")
    assert "EventSource" in js
