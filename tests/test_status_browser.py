"""The status page rendered in a real browser: headless Chromium (Debian's `chromium` package) loads `/` from
the status app on 127.0.0.1, saves a screenshot, and its DOM must hold the chart with both lines drawn.

Skipped, with the reason in pytest's summary (`-ra`), only when no Chromium binary is installed.
"""

from __future__ import annotations

import asyncio
import re
import shutil
import struct
import zlib
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestServer

from gateway.status.app import PlanPoint, Point, make_app

NOW = datetime(2026, 1, 5, 17, 30, tzinfo=UTC)
WIDTH, HEIGHT = 1000, 1100


def chromium() -> str:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    pytest.skip("no chromium or chromium-browser on PATH: install Debian's `chromium` package "
                "(apt-get install -y chromium) to render the status page")


class CurtailedSite:
    """Two hours of a site that was curtailed from 60 to 35 kW half an hour ago, the chargers following."""

    def status(self) -> dict[str, Any]:
        start = NOW - timedelta(minutes=30)
        return {
            "now": NOW.isoformat(),
            "vtn": {"configured": True, "registered": True, "ven_id": "ven-1", "last_poll": NOW.isoformat()},
            "events": [
                {"id": "curtail-1", "status": "active", "opt": "optIn", "start": start.isoformat(),
                 "end": (start + timedelta(hours=1)).isoformat(), "active": True, "test": False,
                 "signals": [{"name": "LOAD_DISPATCH", "type": "setpoint", "values": [35.0]}]},
                {"id": "price-2", "status": "far", "opt": "none", "start": (NOW + timedelta(hours=2)).isoformat(),
                 "end": (NOW + timedelta(hours=4)).isoformat(), "active": False, "test": False,
                 "signals": [{"name": "ELECTRICITY_PRICE", "type": "price", "values": [0.31, 0.12]}]},
            ],
            "site": {"name": "depot north", "limit_kw": 35.0, "ev_limit_kw": None, "load_kw": 34.2, "ev_kw": 26.0,
                     "operator_cap_kw": None, "limits_in_force": {"site_kw": 35.0, "ev_kw": None}},
            "evses": [
                {"id": "cp-1", "protocol": "ocpp", "connected": True, "state": "charging", "limit_a": 13.0,
                 "current_a": 12.8, "reason": "site (curtail-1:LOAD_DISPATCH:setpoint=35)", "acknowledged": True},
                {"id": "cp-2", "protocol": "ocpp", "connected": True, "state": "suspended_evse", "limit_a": 0.0,
                 "current_a": 0.0, "reason": "paused by operator", "acknowledged": True},
                {"id": "mb-1", "protocol": "modbus", "connected": False, "state": "available", "limit_a": 0.0,
                 "current_a": None, "reason": "not connected", "acknowledged": True},
            ],
            "loop": {"decisions": 7200, "last_decision": NOW.isoformat(), "tick_s": 1.0, "restarts": {}},
            "demand": {"month_peak_kw": None, "peak_target_kw": None, "charge_per_kw": None},
            "operator": {"cap_kw": 40.0, "cap_until": (NOW + timedelta(minutes=45)).isoformat(), "paused": ["cp-2"]},
        }

    def healthy(self) -> bool:
        return True

    def history_points(self) -> Sequence[Point]:
        out: list[Point] = []
        for minute in range(120):
            at = NOW - timedelta(minutes=119 - minute)
            limit = 60.0 if minute < 90 else 35.0
            load = min(limit - 1.5, 42.0 + 10.0 * ((minute % 17) / 17.0))
            out.append((at, load, limit))
        return out

    def day_points(self) -> Sequence[Point]:
        return self.history_points()

    def plan_points(self) -> Sequence[PlanPoint]:
        return [(NOW + timedelta(minutes=15 * n), NOW + timedelta(minutes=15 * (n + 1)), 30.0 if n < 2 else 50.0)
                for n in range(8)]

    def events_detail(self) -> list[dict[str, Any]]:
        return []

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]:
        return []


def png_size(data: bytes) -> tuple[int, int]:
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def png_ink(data: bytes) -> int:
    """How much of the image is not background: the compressed pixel data's size, a blank page's being tiny."""
    pos, idat = 8, b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos:pos + 4])
        kind = data[pos + 4:pos + 8]
        if kind == b"IDAT":
            idat += data[pos + 8:pos + 8 + length]
        pos += 12 + length
    zlib.decompress(idat)  # the pixel data is whole
    return len(idat)


async def run_chromium(binary: str, *args: str) -> bytes:
    process = await asyncio.create_subprocess_exec(
        binary, "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
        "--no-first-run", "--disable-extensions", f"--window-size={WIDTH},{HEIGHT}", *args,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    try:
        out, err = await asyncio.wait_for(process.communicate(), 120)  # a bound on a hung browser, not a check
    except TimeoutError:
        process.kill()
        await process.wait()
        raise
    assert process.returncode == 0, err.decode(errors="replace")[-2000:]
    return out


async def test_the_page_renders_in_chromium_with_the_chart(tmp_path: Path) -> None:
    binary = chromium()
    server = TestServer(make_app(CurtailedSite()), host="127.0.0.1", port=0)
    await server.start_server()
    try:
        url = str(server.make_url("/?window=24h"))  # the whole two hours the site holds
        shot = tmp_path / "status.png"
        await run_chromium(binary, f"--screenshot={shot}", url)
        dom = (await run_chromium(binary, "--dump-dom", url)).decode()
        blank = tmp_path / "blank.png"
        await run_chromium(binary, f"--screenshot={blank}", "data:text/html,<html><body></body></html>")
    finally:
        await server.close()

    # What the browser built: the chart with both lines drawn through every point, and the tables.
    chart = re.search(r'<svg id="chart".*?</svg>', dom, re.S)
    assert chart is not None, "no chart in the rendered page"
    for line in ("load", "limit", "plan"):
        points = re.search(rf'<polyline id="{line}"[^>]*points="([^"]*)"', chart.group(0))
        assert points is not None, f"no {line} line in the chart"
        assert len(points.group(1).split()) >= (16 if line == "plan" else 120), line
    assert dom.count("<script") == 1 and 'src="/static/page.js"' in dom  # the app's own, nothing else
    assert "curtail-1" in dom and "price-2" in dom and "paused by operator" in dom
    assert "site cap <b>40 kW</b> until 18:15:00" in dom

    data = shot.read_bytes()
    assert png_size(data) == (WIDTH, HEIGHT)
    # A page with a chart, three tables and text holds far more than a blank page of the same size.
    assert png_ink(data) > 10 * png_ink(blank.read_bytes()), (len(data), blank.stat().st_size)
    print(f"screenshot: {shot} ({len(data)} bytes)")
