"""Solar first on the status side: the operator's mode write, the page's solar line and mode, the metrics."""

from __future__ import annotations

import json
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from support.status import Held

from gateway.status.app import make_app
from gateway.status.page import render_live

TOKEN = "s3cret-token"
PV = {
    "grid_meter": "grid", "grid_kw": -0.4, "import_kw": 0.0, "export_kw": 0.4, "pv_kw": 7.9, "battery_kw": 0.0,
    "surplus_kw": 7.3, "handed_kw": 6.9, "import_cap_kw": None, "import_cap_ev_kw": None, "export_target_kw": 0.0,
    "no_surplus_because": None, "inverters": [],
    "chargers": {"cp-1": {"mode": "pv", "set_by": "config", "cap_a": 10.0, "reason": "pv: surplus",
                          "pending_s": None}},
}


class Solar(Held):
    def status(self) -> dict[str, Any]:
        return {**super().status(), "pv": PV}


async def client(source: Held) -> TestClient[Any, Any]:
    c: TestClient[Any, Any] = TestClient(TestServer(make_app(source, token=TOKEN, operator=source),
                                                    host="127.0.0.1", port=0))
    await c.start_server()
    return c


async def test_the_operator_sets_a_chargers_mode_for_the_session_or_for_good() -> None:
    held = Solar()
    c = await client(held)
    try:
        auth = {"Authorization": f"Bearer {TOKEN}"}
        r = await c.post("/api/evses/cp-1/mode", data=json.dumps({"mode": "minpv"}), headers=auth)
        assert r.status == 200 and (await r.json())["mode"] == "minpv"
        r = await c.post("/api/evses/cp-1/mode", data=json.dumps({"mode": "now", "session": False}), headers=auth)
        assert r.status == 200
        r = await c.post("/api/evses/cp-1/mode", data=json.dumps({"mode": None}), headers=auth)
        assert r.status == 200
        assert held.modes == [("cp-1", "minpv", True), ("cp-1", "now", False), ("cp-1", None, True)]
        r = await c.post("/api/evses/cp-9/mode", data=json.dumps({"mode": "pv"}), headers=auth)
        assert r.status == 404
        r = await c.post("/api/evses/cp-1/mode", data=json.dumps({"mode": "sunny"}), headers=auth)
        assert r.status == 400 and "mode" in (await r.json())["error"]
        r = await c.post("/api/evses/cp-1/mode", data=json.dumps({"mode": "pv"}))
        assert r.status == 401
        assert len(held.modes) == 4  # the unknown charger was asked for, the refused writes never reached it
    finally:
        await c.close()


async def test_the_metrics_show_pv_grid_surplus_and_each_chargers_mode() -> None:
    c = await client(Solar())
    try:
        text = await (await c.get("/metrics")).text()
        assert "gateway_pv_watts 7900.0" in text
        assert "gateway_grid_export_watts 400.0" in text and "gateway_grid_import_watts 0.0" in text
        assert "gateway_pv_to_evs_watts 6900.0" in text
        assert 'gateway_evse_mode{evse="cp-1",mode="pv"} 1.0' in text
        assert 'gateway_evse_mode{evse="cp-1",mode="now"} 0.0' in text
    finally:
        await c.close()


def test_the_page_shows_the_solar_line_and_each_chargers_mode() -> None:
    status = Solar().status()
    status["health"] = {"state": "ok", "reasons": []}
    page = render_live(status, [])
    assert 'id="pv"' in page and "PV <b>7.90 kW</b>" in page and "to the EVs <b>6.90 kW</b>" in page
    assert "mode <b>pv</b>" in page and "pv: surplus" in page
    status["pv"] = {**PV, "no_surplus_because": "grid meter grid is stale", "surplus_kw": None}
    assert "no surplus known: grid meter grid is stale" in render_live(status, [])
    # a site without solar shows nothing of it
    status.pop("pv")
    assert 'id="pv"' not in render_live(status, [])
