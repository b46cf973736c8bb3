"""The status app's health, alarms, errors and writes' validation over HTTP (aiohttp's test server), against a
status document held still; the JSON log format; the reasons in words.

`/healthz` is 200 `ok`, 200 `degraded` (warnings: listed) or 503 `failing` (a critical alarm, the loop not
deciding, a meter down), always a JSON list of reasons; `/api/alarms` lists the alarms with since, message
and action; every error (404, 405, 413 too) is JSON; the writes refuse booleans, quoted numbers, NaN and inf
saying why.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp.test_utils import TestClient, TestServer
from support.status import Held

from gateway.domain import Event, Interval, Signal, SignalName, SignalType
from gateway.runtime.counters import Counters
from gateway.runtime.logs import JsonFormatter, fields_of
from gateway.status.app import make_app
from gateway.status.document import health_of, reason_text

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
TOKEN = "health-test-token-0123456789"


def alarm(key: str, severity: str) -> dict[str, Any]:
    return {"key": key, "severity": severity, "message": f"{key} is wrong", "since": NOW.isoformat(),
            "action": f"fix {key}"}


async def client(source: Held, token: str | None = None) -> TestClient[Any, Any]:
    app = make_app(source, token=token, operator=source if token else None)
    c: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1", port=0))
    await c.start_server()
    return c


@pytest.mark.parametrize(("source", "code", "state", "ids"), [
    (Held(), 200, "ok", []),
    (Held(alarms=[alarm("vtn.unreachable", "warning")], vtn_state="degraded"), 200, "degraded",
     ["vtn.unreachable"]),
    (Held(alarms=[alarm("meter.grid.stale", "critical")], meter="stale"), 503, "failing", ["meter.grid.stale"]),
    (Held(meter="unreachable"), 503, "failing", ["grid"]),  # a meter down fails even before its alarm is raised
    (Held(healthy=False), 503, "failing", ["decide"]),
    (Held(alarms=[alarm("vtn.unreachable", "critical")], vtn_state="failing"), 503, "failing", ["vtn.unreachable"]),
])
async def test_healthz_is_ok_degraded_or_failing_with_its_reasons_as_json(
    source: Held, code: int, state: str, ids: list[str]
) -> None:
    c = await client(source)
    try:
        response = await c.get("/healthz")
        body = await response.json()
        assert response.status == code and body["status"] == state, body
        assert [r["id"] for r in body["reasons"]] == ids
        assert all(r["message"] for r in body["reasons"])
        metrics = await (await c.get("/metrics")).text()
        assert f'gateway_health_state{{state="{state}"}} 1.0' in metrics
        assert f"gateway_healthy {0.0 if code == 503 else 1.0}" in metrics
        # the page shows the same state at the top, and the alarms with what to do
        page = await (await c.get("/")).text()
        assert f'<span class="badge {state}" id="health">{state}</span>' in page
        for key in ids:
            if "." in key:
                assert f'data-key="{key}"' in page and f"fix {key}" in page
    finally:
        await c.close()


async def test_api_alarms_lists_since_message_and_action() -> None:
    c = await client(Held(alarms=[alarm("store.write", "critical"), alarm("charger.cp-1.over_limit", "warning")]))
    try:
        body = await (await c.get("/api/alarms")).json()
        assert [a["key"] for a in body["alarms"]] == ["store.write", "charger.cp-1.over_limit"]
        assert all({"since", "message", "action", "severity"} <= set(a) for a in body["alarms"])
        assert body["health"]["state"] == "failing"
    finally:
        await c.close()


async def test_metrics_follow_prometheus_conventions() -> None:
    c = await client(Held())
    try:
        text = await (await c.get("/metrics")).text()
    finally:
        await c.close()
    samples = [line for line in text.splitlines() if line and not line.startswith("#")]
    for name in ("gateway_site_load_watts 30000.0", "gateway_site_limit_watts 40000.0",
                 'gateway_evse_power_watts{evse="cp-1"} 11000.0', 'gateway_evse_current_amperes{evse="cp-1"} 15.9',
                 'gateway_evse_session_energy_joules{evse="cp-1"} 1.512e+07', 'gateway_evse_up{evse="cp-1"} 1.0',
                 'gateway_component_up{component="meter",id="grid"} 1.0', 'gateway_restarts_total{adapter="ocpp"} 1.0',
                 'gateway_vtn_polls_total{result="unreachable"} 2.0', "gateway_store_size_bytes 1e+06",
                 'gateway_conductor_current_amperes{circuit="main",phase="L1"} 50.0', "gateway_decisions_total 7.0"):
        assert name in samples, name
    types = dict(line.split()[2:4] for line in text.splitlines() if line.startswith("# TYPE"))
    assert types["gateway_decisions_total"] == "counter" and types["gateway_build_info"] == "gauge"
    assert not any(s.startswith(("gateway_site_load_kw", "gateway_evse_limit_amps")) for s in samples)


def test_the_runtime_counters_are_prometheus_counters_and_histograms_of_their_own() -> None:
    from prometheus_client import generate_latest

    one, two = Counters(), Counters()  # two runtimes in one process: no collision
    one.decided(0.004)
    one.pushed("ocpp", True, 0.12)
    one.pushed("modbus", False, 0.0)
    text = generate_latest(one.registry).decode()
    assert "gateway_decisions_total 1.0" in text
    assert 'gateway_decision_duration_seconds_bucket{le="0.005"} 1.0' in text
    assert 'gateway_limit_pushes_total{protocol="ocpp",result="accepted"} 1.0' in text
    assert 'gateway_limit_pushes_total{protocol="modbus",result="refused"} 1.0' in text
    assert 'gateway_limit_push_round_trip_seconds_count{protocol="ocpp"} 1.0' in text
    assert 'gateway_limit_push_round_trip_seconds_count{protocol="modbus"} 0.0' in text  # unanswered: no RTT
    assert "gateway_decisions_total 0.0" in generate_latest(two.registry).decode()


async def test_every_error_is_json() -> None:
    c = await client(Held(), token=TOKEN)
    try:
        for method, path, code in (("GET", "/no/such/page", 404), ("PUT", "/api/cap", 405),
                                   ("POST", "/api/status", 405), ("POST", "/api/evses/cp-9/pause", 404)):
            response = await c.request(method, path, headers={"Authorization": f"Bearer {TOKEN}"})
            assert response.status == code, (method, path)
            assert response.content_type == "application/json"
            assert (await response.json())["error"], (method, path)
        response = await c.post("/api/cap", data=b"{" + b" " * 70_000 + b"}",
                                headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 413 and "too large" in (await response.json())["error"]
        assert "Allow" in (await c.put("/api/cap")).headers
    finally:
        await c.close()


@pytest.mark.parametrize(("body", "error"), [
    (b'{"kw": true}', "kw: expected a number, got the boolean true"),
    (b'{"kw": "30"}', "kw: expected a number, got the string '30' (write it without quotes)"),
    (b'{"kw": 30, "minutes": false}', "minutes: expected a number, got the boolean false"),
    (b'{"kw": NaN}', "kw: nan is not a finite number"),
    (b'{"kw": Infinity}', "kw: inf is not a finite number"),
    (b'{"kw": 30, "minutes": -Infinity}', "minutes: -inf is not a finite number"),
])
async def test_writes_refuse_booleans_quoted_numbers_nan_and_inf_saying_why(body: bytes, error: str) -> None:
    source = Held()
    c = await client(source, token=TOKEN)
    try:
        response = await c.post("/api/cap", data=body, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status == 400
        message = (await response.json())["error"]
        assert message.startswith(error), message
        if "finite" in error:
            assert "NaN would compare false" in message and "infinity would be no cap" in message
        assert source.caps == []
        ok = await c.post("/api/cap", json={"kw": 30, "minutes": 15}, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status == 200 and source.caps[0][0] == 30
    finally:
        await c.close()


async def test_the_page_has_operator_controls_only_with_a_token() -> None:
    for token, shown in ((None, False), (TOKEN, True)):
        c = await client(Held(), token=token)
        try:
            response = await c.get("/")
            page = await response.text()
            assert ('id="controls"' in page) is shown and ('data-action="pause"' in page) is shown
            assert "script-src 'self'" in response.headers["Content-Security-Policy"]
            assert '<meta name="viewport"' in page  # readable on a phone
            assert "13:00:00 CET" in page  # the site's zone (Europe/Berlin), not UTC
        finally:
            await c.close()


async def test_the_chart_window_is_15_min_1_h_or_24_h() -> None:
    c = await client(Held())
    try:
        for window, first in (("15m", "12:45"), ("1h", "12:00"), ("24h", "Sun 13:00"), ("bogus", "12:00")):
            page = await (await c.get("/", params={"window": window})).text()
            chart = page[page.index('<svg id="chart"'):page.index("</svg>")]
            assert f">{first}</text>" in chart.replace(" now", ""), (window, chart[-600:])
            assert 'viewBox="0 0 720 220"' in chart and 'width="' not in chart.split(">")[0]  # scales to the screen
    finally:
        await c.close()


def test_health_of_a_document_without_components_follows_alarms_and_the_loop() -> None:
    assert health_of({"alarms": []}, True)["state"] == "ok"
    assert health_of({"alarms": [alarm("x", "warning")]}, True)["state"] == "degraded"
    assert health_of({"alarms": []}, False)["state"] == "failing"
    offline = {"alarms": [], "evses": [{"id": "cp-2", "online": False, "last_seen": None}]}
    assert health_of(offline, True)["reasons"][0]["component"] == "charger"


def test_reasons_in_words() -> None:
    zone = ZoneInfo("Europe/Berlin")
    level = Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(minutes=70), 2.0),))
    event = Event("demo-curtail", 0, NOW, timedelta(minutes=70), (level,))
    events = {"demo-curtail": event}
    assert reason_text("ev (demo-curtail:SIMPLE:level=2)", events=events, now=NOW, zone=zone) == \
        "curtailed: DR event demo-curtail level 2 until 14:10"
    assert reason_text("plan", events=events, now=NOW, zone=zone, plan_start=NOW + timedelta(hours=13)) == \
        "waiting for cheaper hours, starts 02:00"
    assert reason_text("not connected", events={}, now=NOW, zone=zone) == "no car plugged in"
    assert reason_text("site (operator cap 11 kW)", events={}, now=NOW, zone=zone,
                       cap_until=NOW + timedelta(minutes=30)) == "capped: operator cap 11 kW until 13:30"
    assert reason_text("main/L1", events={}, now=NOW, zone=zone) == "sharing: circuit main L1 is full"
    assert reason_text("silent: counted at max", events={}, now=NOW, zone=zone).startswith("not heard from")


def test_json_logs_carry_the_messages_fields() -> None:
    assert fields_of("limit charger=cp-1 old_a=14 new_a=8 reason='ev (demo-curtail:SIMPLE:level=2)'") == {
        "event": "limit", "charger": "cp-1", "old_a": 14, "new_a": 8, "reason": "ev (demo-curtail:SIMPLE:level=2)"}
    record = logging.LogRecord("gateway.ocpp", logging.INFO, __file__, 1,
                               "ocpp limit charger=%s amps=%s accepted=%s rtt_ms=%d", ("cp-1", 8.0, True, 7), None)
    record.site = "north"  # an `extra=` field
    line = json.loads(JsonFormatter().format(record))
    assert line["event"] == "ocpp limit" and line["charger"] == "cp-1" and line["amps"] == 8.0
    assert line["accepted"] is True and line["rtt_ms"] == 7 and line["site"] == "north"
    assert line["level"] == "info" and line["logger"] == "gateway.ocpp" and line["message"].startswith("ocpp limit")
    plain = json.loads(JsonFormatter().format(logging.LogRecord("x", logging.WARNING, __file__, 1,
                                                                "vtn unreachable: boom", (), None)))
    assert plain["event"] == "vtn unreachable: boom"
