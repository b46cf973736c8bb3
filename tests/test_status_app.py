"""The status endpoint over HTTP (aiohttp's test server): JSON, health, Prometheus metrics and the page;
the operator's writes against a running gateway (a real openleadr VTN and a real OCPP 1.6 charge point).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.waiting import stopped, until

from gateway.config import load_config
from gateway.domain import Event, Interval, OptState, Signal, SignalName, SignalType
from gateway.openadr.ven import Ven
from gateway.runtime.logs import RecentLog
from gateway.runtime.loop import Runtime
from gateway.sim.ocpp_cp import Ev, SimChargePoint
from gateway.sim.vtn import SimVtn
from gateway.status.app import PlanPoint, Point, make_app
from gateway.status.events import events_json

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class FixedSource:
    """A gateway frozen at one moment: what the runtime would report."""

    def __init__(self, healthy: bool = True, demand_charge: float | None = None) -> None:
        self.is_healthy = healthy
        self.recent = RecentLog(size=3)
        self.demand: dict[str, float | None] = {"month_peak_kw": None, "peak_target_kw": None,
                                                "charge_per_kw": None}
        if demand_charge is not None:
            self.demand = {"month_peak_kw": 36.25, "peak_target_kw": 38.0, "charge_per_kw": demand_charge}

    def status(self) -> dict[str, Any]:
        return {
            "now": NOW.isoformat(),
            "vtn": {"configured": True, "registered": True, "ven_id": "ven-1", "last_poll": NOW.isoformat()},
            "events": [{"id": "ev-<1>", "status": "active", "opt": "optIn", "start": NOW.isoformat(), "end": None,
                        "active": True, "test": False,
                        "signals": [{"name": "SIMPLE", "type": "level", "values": [2.0]}]}],
            "site": {"name": "depot & co", "limit_kw": 40.0, "ev_limit_kw": 33.0, "load_kw": 38.5, "ev_kw": 30.0,
                     "operator_cap_kw": None, "limits_in_force": {"site_kw": 40.0, "ev_kw": 33.0}},
            "evses": [
                {"id": "cp-1", "protocol": "ocpp", "connected": True, "state": "charging", "limit_a": 16.0,
                 "current_a": 15.8, "reason": "ev (ev-1:SIMPLE:level=2)", "acknowledged": True},
                {"id": "mb-1", "protocol": "modbus", "connected": False, "state": "available", "limit_a": 0.0,
                 "current_a": None, "reason": "not connected", "acknowledged": True, "fallback_a": 0.0},
            ],
            "loop": {"decisions": 42, "last_decision": NOW.isoformat(), "tick_s": 1.0, "restarts": {}},
            "demand": self.demand,
            "operator": {"cap_kw": 45.0, "cap_until": None, "paused": ["mb-1"]},
        }

    def healthy(self) -> bool:
        return self.is_healthy

    def history_points(self) -> Sequence[Point]:
        return [(NOW + timedelta(seconds=s), 30.0 + s, 40.0 if s > 5 else 60.0) for s in range(10)]

    def day_points(self) -> Sequence[Point]:
        return [(NOW - timedelta(minutes=m), 30.0, 40.0) for m in range(60, -1, -1)]

    def events_detail(self) -> list[dict[str, Any]]:
        level = Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(minutes=30), 2.0),
                                                           Interval(timedelta(minutes=30), 1.0)))
        over = Event("ev-old", 0, NOW - timedelta(hours=3), timedelta(hours=1), (level,))
        coming = Event("ev-next", 2, NOW + timedelta(hours=1), timedelta(hours=1), (level,),
                       start_offset=timedelta(seconds=90), opt=OptState.OPT_OUT)
        return events_json([coming, over], NOW)

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]:
        return [e.as_json() for e in self.recent.since(seq, at)]

    def plan_points(self) -> Sequence[PlanPoint]:
        # The plan was made a little before the last history point; its slots run 15 min each.
        made = NOW + timedelta(seconds=2)
        ends = [made + timedelta(minutes=15 * (n + 1)) for n in range(12)]
        return [(made if n == 0 else ends[n - 1], ends[n], 80.0 if n == 3 else 25.0) for n in range(12)]


async def client_for(source: FixedSource) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(make_app(source), host="127.0.0.1", port=0))
    await client.start_server()
    return client


async def test_api_status_has_the_documented_shape(gateway: Gateway) -> None:
    """The document a running gateway builds (a real VTN with an event, a real charge point) has every key
    docs/status.md shows, at every level."""
    documented = {
        "": {"now", "vtn", "events", "site", "evses", "loop", "demand", "operator"},
        "vtn": {"configured", "registered", "ven_id", "last_poll"},
        "events": {"id", "status", "opt", "start", "end", "active", "test", "signals"},
        "site": {"name", "limit_kw", "dr_site_limit_kw", "ev_limit_kw", "load_kw", "ev_kw", "operator_cap_kw",
                 "limits_in_force"},
        "evses": {"id", "protocol", "connected", "state", "limit_a", "current_a", "reason", "acknowledged",
                  "may_draw_a", "fallback_a"},
        "loop": {"decisions", "last_decision", "tick_s", "restarts"},
        "demand": {"month_peak_kw", "peak_target_kw", "charge_per_kw"},
        "operator": {"cap_kw", "cap_until", "paused"},
    }
    rt = gateway.runtime
    assert isinstance(rt.ven, Ven)  # this site speaks OpenADR 2.0b
    await asyncio.wait_for(rt.ven.registered.wait(), 10)
    assert rt.ven.ven_id is not None
    event_id = gateway.vtn.add_event(rt.ven.ven_id, [("SIMPLE", "level", [2.0])], event_id="ev-shape-1",
                                     start=datetime.now(UTC) - timedelta(seconds=5), interval=timedelta(minutes=30))
    await wait_for(lambda: event_id in rt.events and rt.last is not None and "cp-1" in rt.readings, 15)
    async with gateway.http.get(gateway.url + "/api/status") as response:
        assert response.status == 200
        body = await response.json()
    assert set(body) >= documented[""], documented[""] - set(body)
    for part in ("vtn", "site", "loop", "demand", "operator"):
        assert set(body[part]) >= documented[part], (part, documented[part] - set(body[part]))
    for part in ("events", "evses"):
        assert body[part], f"no {part} in the document"
        assert set(body[part][0]) >= documented[part], (part, documented[part] - set(body[part][0]))
    assert set(body["vtn"]) >= {"registered", "last_poll"}
    assert set(body["site"]) >= {"limit_kw", "load_kw"}
    assert set(body["evses"][0]) >= {"id", "connected", "limit_a", "current_a", "reason"}
    assert body["events"][0]["id"] == event_id
    assert body["vtn"]["registered"] is True and body["evses"][0]["id"] == "cp-1"


async def test_healthz_follows_the_loop() -> None:
    for healthy, code in ((True, 200), (False, 503)):
        client = await client_for(FixedSource(healthy))
        try:
            assert (await client.get("/healthz")).status == code
        finally:
            await client.close()


async def test_metrics_are_prometheus_text() -> None:
    client = await client_for(FixedSource())
    try:
        response = await client.get("/metrics")
        text = await response.text()
        assert response.status == 200 and response.content_type == "text/plain"
        # Base units (W, A), as Prometheus names them.
        assert "gateway_site_limit_watts 40000.0" in text and "gateway_site_load_watts 38500.0" in text
        assert 'gateway_evse_limit_amperes{evse="cp-1"} 16.0' in text
        assert 'gateway_evse_plugged{evse="mb-1"} 0.0' in text
        assert "gateway_healthy 1.0" in text and 'gateway_health_state{state="ok"} 1.0' in text
        assert "gateway_operator_cap_watts 45000.0" in text
        assert "gateway_decisions_total 42.0" in text and 'gateway_build_info{python=' in text
        assert 'gateway_evse_paused{evse="mb-1"} 1.0' in text and 'gateway_evse_paused{evse="cp-1"} 0.0' in text
    finally:
        await client.close()


async def test_the_page_is_self_contained_with_a_chart_and_escaped_names() -> None:
    client = await client_for(FixedSource())
    try:
        page = await (await client.get("/")).text()
        assert "<svg" in page and 'id="load"' in page and 'id="limit"' in page
        # One script, from the app itself (it keeps the page live); nothing from elsewhere.
        assert page.count("<script") == 1 and '<script src="/static/page.js"' in page
        assert "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "depot &amp; co" in page and "ev-&lt;1&gt;" in page
        assert "cp-1" in page and "not connected" in page
        assert "without the gateway: falls back to 0 A" in page  # what the operator must know of a dead gateway
    finally:
        await client.close()


async def test_the_demand_charge_is_in_the_json_and_the_month_peak_on_the_page() -> None:
    client = await client_for(FixedSource(demand_charge=15.51))
    try:
        body = await (await client.get("/api/status")).json()
        assert body["demand"] == {"month_peak_kw": 36.25, "peak_target_kw": 38.0, "charge_per_kw": 15.51}
        page = await (await client.get("/")).text()
        assert 'id="demand"' in page and "month's peak so far <b>36.25 kW</b>" in page and "38 kW" in page
    finally:
        await client.close()
    client = await client_for(FixedSource())
    try:
        body = await (await client.get("/api/status")).json()
        assert body["demand"] == {"month_peak_kw": None, "peak_target_kw": None, "charge_per_kw": None}
        assert 'id="demand"' not in await (await client.get("/")).text()
    finally:
        await client.close()


async def test_the_chart_draws_the_planned_site_power_with_a_legend() -> None:
    client = await client_for(FixedSource())
    try:
        page = await (await client.get("/?window=24h")).text()
        chart = page[page.index("<svg"):page.index("</svg>")]
        assert '<polyline id="plan"' in chart and ">planned</text>" in chart
        points = chart.split('<polyline id="plan"', 1)[1].split('points="', 1)[1].split('"', 1)[0].split()
        # Two points per slot, from now on and no further than two hours ahead (over a 24 h window): the
        # chart's right edge is where the plan's line ends.
        assert len(points) == 2 * 8
        assert float(points[-1].split(",")[0]) == 720 - 36
        # The highest planned slot (80 kW) sets the top of the chart: it touches the top margin.
        assert min(float(p.split(",")[1]) for p in points) < 60
    finally:
        await client.close()


async def test_api_events_has_every_stored_event_with_its_intervals() -> None:
    client = await client_for(FixedSource())
    try:
        events = (await (await client.get("/api/events")).json())["events"]
        assert [e["id"] for e in events] == ["ev-old", "ev-next"]
        old, coming = events
        assert old["phase"] == "over" and coming["phase"] == "upcoming"
        assert coming["opt"] == "optOut" and not coming["acted_on"] and coming["modification_number"] == 2
        # The randomized offset moves the whole event, each interval after the one before.
        assert coming["start_offset_s"] == 90 and coming["start"] == (NOW + timedelta(seconds=3690)).isoformat()
        intervals = coming["signals"][0]["intervals"]
        assert [i["value"] for i in intervals] == [2.0, 1.0]
        assert intervals[1]["start"] == intervals[0]["end"] and intervals[1]["end"] == coming["end"]
    finally:
        await client.close()


async def test_api_log_gives_the_recent_lines_after_a_sequence_number_or_a_time() -> None:
    source = FixedSource()
    logger = logging.getLogger("test.status.log")
    logger.setLevel(logging.INFO)
    logger.addHandler(source.recent)
    logger.propagate = False
    try:
        for n in range(5):
            logger.info("line n=%d", n)
    finally:
        logger.removeHandler(source.recent)
    client = await client_for(source)
    try:
        body = await (await client.get("/api/log")).json()
        # The ring holds three: the oldest two are gone, the numbering goes on.
        assert [e["message"] for e in body["entries"]] == ["line n=2", "line n=3", "line n=4"]
        assert [e["seq"] for e in body["entries"]] == [3, 4, 5] and body["next"] == 5
        assert body["entries"][0]["level"] == "info" and body["entries"][0]["logger"] == "test.status.log"
        after = await (await client.get("/api/log", params={"since": "4"})).json()
        assert [e["message"] for e in after["entries"]] == ["line n=4"]
        assert (await (await client.get("/api/log", params={"since": "5"})).json()) == {"entries": [], "next": 5}
        at = body["entries"][1]["at"]
        by_time = await (await client.get("/api/log", params={"since": at})).json()
        assert by_time["entries"][0]["seq"] <= 4 and by_time["entries"][-1]["seq"] == 5
        for bad in ("yesterday", "2026-01-05T12:00:00", "-1"):
            response = await client.get("/api/log", params={"since": bad})
            assert response.status == 400
            assert (await response.json())["error"].startswith("since: ")
    finally:
        await client.close()


async def test_writes_are_refused_while_no_token_is_configured() -> None:
    client = await client_for(FixedSource())
    try:
        response = await client.post("/api/cap", json={"kw": 10}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 403
        assert "set [status] token" in (await response.json())["error"]
    finally:
        await client.close()


# ------------------------------------------------------------------------------------ against a running gateway

TOKEN = "operator-secret-0123456789"


async def wait_for(cond: Callable[[], bool], timeout_s: float = 10.0) -> None:
    """The suite's `until`, with this module's longer default."""
    await until(cond, timeout_s)


@dataclass
class Gateway:
    runtime: Runtime
    vtn: SimVtn
    cp: SimChargePoint
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        assert self.runtime.status_url is not None
        return self.runtime.status_url.rstrip("/")

    def auth(self, token: str = TOKEN) -> dict[str, str]:
        return {"Authorization": f"Bearer {token}"}


def config_text(vtn_url: str, store: Path) -> str:
    return "\n".join([
        "[site]", 'name = "status test site"', 'wiring = "three-phase-400/230"', "service_breaker_a = 63", "",
        "[[chargers]]", 'id = "cp-1"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"', "max_a = 32",
        "fallback_a = 6", "",
        "[vtn]", f'url = "{vtn_url}"', 'ven_name = "status-ven"', "allow_plain_http = true", "poll_s = 1", "",
        "[ocpp]", "port = 0", "meter_interval_s = 1", "ack_wait_s = 2", "",
        "[control]", "tick_s = 0.25", "min_on_time_s = 0", "charger_stale_s = 30", "",
        "[status]", "port = 0", f'token = "{TOKEN}"', "",
        "[store]", f'path = "{store}"', "",
    ])


@pytest.fixture
async def gateway(tmp_path: Path) -> AsyncIterator[Gateway]:
    vtn = SimVtn()
    await vtn.start()
    path = tmp_path / "gateway.toml"
    path.write_text(config_text(vtn.url, tmp_path / "gateway.sqlite"))
    runtime = Runtime(load_config(path))
    task = asyncio.create_task(runtime.run())
    cp: SimChargePoint | None = None
    try:
        await asyncio.wait_for(runtime.started.wait(), 10)
        assert runtime.ocpp is not None
        cp = SimChargePoint(f"ws://127.0.0.1:{runtime.ocpp.server.port}/ocpp", "cp-1", version="1.6",
                            meter_interval_s=1.0)
        await cp.start()
        await cp.plug_in(Ev(max_a=32.0, plugged=True))
        async with aiohttp.ClientSession() as http:
            yield Gateway(runtime, vtn, cp, http)
    finally:
        runtime.stop()
        await stopped(task, 15)
        if cp is not None:
            await cp.stop()
        await vtn.stop()


async def test_writes_need_the_configured_bearer_token(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for headers in ({}, gateway.auth("not-the-token-at-all"), {"Authorization": f"Basic {TOKEN}"}):
        for method, path in (("POST", "/api/cap"), ("DELETE", "/api/cap"), ("POST", "/api/evses/cp-1/pause"),
                             ("POST", "/api/evses/cp-1/resume"), ("POST", "/api/events/ev-1/opt")):
            async with gateway.http.request(method, gateway.url + path, json={"kw": 5}, headers=headers) as r:
                assert r.status == 401, (method, path, headers)
                assert r.headers["WWW-Authenticate"].startswith("Bearer")
                assert "bearer token" in (await r.json())["error"]
    assert gateway.runtime.operator_cap_kw is None and not gateway.runtime.paused
    assert any("operator write refused: no token" in r.getMessage() for r in caplog.records)
    assert any("operator write refused: bad token" in r.getMessage() for r in caplog.records)


async def test_a_bad_body_gets_400_with_one_clear_line(gateway: Gateway) -> None:
    cases = [
        ("/api/cap", b"{not json", "the body is not JSON"),
        ("/api/cap", b"[1, 2]", "the body must be a JSON object"),
        ("/api/cap", b"{}", "kw: Field required"),
        ("/api/cap", b'{"kw": -3}', "kw: Input should be greater than 0"),
        ("/api/cap", b'{"kw": "lots"}', "kw: expected a number, got the string 'lots'"),
        ("/api/cap", b'{"kw": 10, "minutes": 0}', "minutes: Input should be greater than 0"),
        ("/api/cap", b'{"kw": 10, "until": "soon"}', "until: Extra inputs are not permitted"),
        ("/api/events/ev-1/opt", b'{"opt": "maybe"}', "opt: Input should be 'optIn' or 'optOut'"),
        ("/api/evses/cp-1/pause", b'{"minutes": 5}', "minutes: Extra inputs are not permitted"),
    ]
    for path, body, message in cases:
        async with gateway.http.post(gateway.url + path, data=body, headers=gateway.auth()) as r:
            assert r.status == 400, (path, body)
            error = (await r.json())["error"]
            assert error == message or error.startswith(message), (path, body, error)
            assert "\n" not in error
    assert gateway.runtime.operator_cap_kw is None and not gateway.runtime.paused


async def test_pausing_a_charger_gives_it_0_a_with_its_reason_until_resumed(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rt, cp = gateway.runtime, gateway.cp
    assert gateway.url.startswith("http://127.0.0.1:")  # loopback unless the config says otherwise
    await wait_for(lambda: (cp.limit_a() or 0.0) >= 32.0)
    async with gateway.http.post(gateway.url + "/api/evses/cp-9/pause", headers=gateway.auth()) as r:
        assert r.status == 404 and "cp-9" in (await r.json())["error"]
    async with gateway.http.post(gateway.url + "/api/evses/cp-1/pause", headers=gateway.auth()) as r:
        assert r.status == 200 and await r.json() == {"charger": "cp-1", "paused": True}
    await wait_for(lambda: cp.limit_a() == 0.0)  # the charge point itself was told
    assert rt.last is not None and rt.last.limits["cp-1"] == 0.0
    status = await (await gateway.http.get(gateway.url + "/api/status")).json()
    evse = status["evses"][0]
    assert evse["limit_a"] == 0.0 and evse["reason"] == "paused by operator"
    assert status["operator"]["paused"] == ["cp-1"]
    assert "paused: cp-1" in await (await gateway.http.get(gateway.url + "/")).text()
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("operator write=pause charger=cp-1 remote=127.0.0.1") for m in messages)
    assert any("charger=cp-1" in m and "new_a=0" in m and "reason='paused by operator'" in m for m in messages)
    # The write is in the recent log the endpoint serves.
    lines = (await (await gateway.http.get(gateway.url + "/api/log")).json())["entries"]
    assert any(e["message"].startswith("operator write=pause charger=cp-1") for e in lines)
    async with gateway.http.post(gateway.url + "/api/evses/cp-1/resume", headers=gateway.auth()) as r:
        assert r.status == 200 and await r.json() == {"charger": "cp-1", "paused": False}
    await wait_for(lambda: (cp.limit_a() or 0.0) >= 32.0)
    assert rt.last is not None and rt.last.reasons["cp-1"] != "paused by operator"


async def test_a_temporary_site_cap_binds_and_is_lifted(gateway: Gateway, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    rt, cp = gateway.runtime, gateway.cp
    await wait_for(lambda: (cp.limit_a() or 0.0) >= 32.0)
    async with gateway.http.post(gateway.url + "/api/cap", json={"kw": 11, "minutes": 30},
                                 headers=gateway.auth()) as r:
        assert r.status == 200
        body = await r.json()
    assert body["cap_kw"] == 11
    until = datetime.fromisoformat(body["cap_until"])
    assert rt.operator_cap_until == until
    assert timedelta(minutes=29) < until - datetime.now(UTC) <= timedelta(minutes=30)
    # 11 kW on three phases at 230 V is 15.9 A: the charger gets 15 A, and the reason names the cap.
    await wait_for(lambda: cp.limit_a() == 15.0)
    assert rt.last is not None and rt.last.reasons["cp-1"] == "site (operator cap 11 kW)"
    status = await (await gateway.http.get(gateway.url + "/api/status")).json()
    assert status["site"]["operator_cap_kw"] == 11 and status["operator"]["cap_until"] == body["cap_until"]
    assert any(r.getMessage().startswith("operator write=cap kw=11 until=") for r in caplog.records)
    async with gateway.http.delete(gateway.url + "/api/cap", headers=gateway.auth()) as r:
        assert r.status == 200 and await r.json() == {"cap_kw": None, "cap_until": None}
    await wait_for(lambda: (cp.limit_a() or 0.0) >= 32.0)
    assert rt.operator_cap_kw is None and rt.operator_cap_until is None


def test_an_operator_cap_lapses_at_its_expiry(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    path = tmp_path / "gateway.toml"
    path.write_text(config_text("http://127.0.0.1:9/OpenADR2/Simple/2.0b", tmp_path / "gw.sqlite"))
    rt = Runtime(load_config(path), clock=lambda: NOW, serve_status=False)
    rt.set_operator_cap(20.0, until=NOW + timedelta(minutes=10))
    assert rt.operator_cap(NOW + timedelta(minutes=9)) == 20.0
    assert rt.inputs(NOW + timedelta(minutes=9)).operator_cap_kw == 20.0
    assert rt.inputs(NOW + timedelta(minutes=10)).operator_cap_kw is None
    assert rt.operator_cap_kw is None and rt.operator_cap_until is None
    assert any(r.getMessage().startswith("operator cap expired kw=20") for r in caplog.records)
    rt.set_operator_cap(20.0)  # without an expiry: until lifted
    assert rt.operator_cap(NOW + timedelta(days=30)) == 20.0


async def test_an_operator_opt_out_reaches_the_vtn_and_stops_the_curtailment(
    gateway: Gateway, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    rt, cp, vtn = gateway.runtime, gateway.cp, gateway.vtn
    assert isinstance(rt.ven, Ven)  # this site speaks OpenADR 2.0b
    await asyncio.wait_for(rt.ven.registered.wait(), 10)
    ven_id = rt.ven.ven_id
    assert ven_id is not None
    start = datetime.now(UTC) - timedelta(seconds=5)
    event_id = vtn.add_event(ven_id, [("LOAD_DISPATCH", "setpoint", [7.0])], start=start,
                             interval=timedelta(minutes=30), unit="kW")
    await wait_for(lambda: event_id in rt.events and rt.last is not None and rt.last.site_limit_kw is not None
                   and (cp.limit_a() or 32.0) < 32.0, 15)
    async with gateway.http.post(gateway.url + "/api/events/no-such-event/opt", json={"opt": "optOut"},
                                 headers=gateway.auth()) as r:
        assert r.status == 404
    async with gateway.http.post(gateway.url + f"/api/events/{event_id}/opt",
                                 json={"opt": "optOut", "reason": "site open day"}, headers=gateway.auth()) as r:
        assert r.status == 200
        body = await r.json()
    assert body["event"]["id"] == event_id and body["event"]["opt"] == "optOut" and not body["event"]["acted_on"]
    # The VTN was told: an oadrCreateOpt for this event, optOut, over the wire.
    await wait_for(lambda: any(p["event_id"] == event_id and p["opt_type"] == "optOut"
                               for p in vtn.opt_service.opts.values()), 15)
    await wait_for(lambda: (cp.limit_a() or 0.0) >= 32.0)  # and the site no longer follows the event
    assert rt.events[event_id].opt is OptState.OPT_OUT
    listed = (await (await gateway.http.get(gateway.url + "/api/events")).json())["events"]
    assert [e["opt"] for e in listed if e["id"] == event_id] == ["optOut"]
    assert any(r.getMessage() == f"operator write=opt event={event_id} opt=optOut reason='site open day' "
               "remote=127.0.0.1" for r in caplog.records)
