"""The status endpoint over HTTP (aiohttp's test server): JSON, health, Prometheus metrics and the page."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp.test_utils import TestClient, TestServer

from gateway.status.app import PlanPoint, Point, make_app

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)


class FixedSource:
    """A gateway frozen at one moment: what the runtime would report."""

    def __init__(self, healthy: bool = True, demand_charge: float | None = None) -> None:
        self.is_healthy = healthy
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
                 "current_a": None, "reason": "not connected", "acknowledged": True},
            ],
            "loop": {"decisions": 42, "last_decision": NOW.isoformat(), "tick_s": 1.0, "restarts": {}},
            "demand": self.demand,
        }

    def healthy(self) -> bool:
        return self.is_healthy

    def history_points(self) -> Sequence[Point]:
        return [(NOW + timedelta(seconds=s), 30.0 + s, 40.0 if s > 5 else 60.0) for s in range(10)]

    def plan_points(self) -> Sequence[PlanPoint]:
        # The plan was made a little before the last history point; its slots run 15 min each.
        made = NOW + timedelta(seconds=2)
        ends = [made + timedelta(minutes=15 * (n + 1)) for n in range(12)]
        return [(made if n == 0 else ends[n - 1], ends[n], 80.0 if n == 3 else 25.0) for n in range(12)]


async def client_for(source: FixedSource) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(make_app(source), host="127.0.0.1", port=0))
    await client.start_server()
    return client


async def test_api_status_has_the_documented_shape() -> None:
    client = await client_for(FixedSource())
    try:
        response = await client.get("/api/status")
        assert response.status == 200
        body = await response.json()
        assert set(body["vtn"]) >= {"registered", "last_poll"}
        assert set(body["site"]) >= {"limit_kw", "load_kw"}
        assert set(body["evses"][0]) >= {"id", "connected", "limit_a", "current_a", "reason"}
        assert body["events"][0]["id"] == "ev-<1>"
    finally:
        await client.close()


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
        assert "gateway_site_limit_kw 40.0" in text
        assert 'gateway_evse_limit_amps{evse="cp-1"} 16.0' in text
        assert 'gateway_evse_connected{evse="mb-1"} 0.0' in text
        assert "gateway_healthy 1.0" in text
    finally:
        await client.close()


async def test_the_page_is_self_contained_with_a_chart_and_escaped_names() -> None:
    client = await client_for(FixedSource())
    try:
        page = await (await client.get("/")).text()
        assert "<svg" in page and 'id="load"' in page and 'id="limit"' in page
        assert "<script" not in page and "http://" not in page.replace('xmlns="http://www.w3.org/2000/svg"', "")
        assert "depot &amp; co" in page and "ev-&lt;1&gt;" in page
        assert "cp-1" in page and "not connected" in page
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
        page = await (await client.get("/")).text()
        chart = page[page.index("<svg"):page.index("</svg>")]
        assert '<polyline id="plan"' in chart and ">planned</text>" in chart
        points = chart.split('<polyline id="plan"', 1)[1].split('points="', 1)[1].split('"', 1)[0].split()
        # Two points per slot, from the last history point on and no further than two hours ahead: the
        # chart's right edge is where the plan's line ends.
        assert len(points) == 2 * 9
        assert float(points[-1].split(",")[0]) == 720 - 36
        # The highest planned slot (80 kW) sets the top of the chart: it touches the top margin.
        assert min(float(p.split(",")[1]) for p in points) < 60
    finally:
        await client.close()
