"""The status document built from a runtime that is not running (no I/O): an opted-out event in force is
"in force, not acted on", not upcoming; the limit is on the load's basis (power factor 1); a charger never
heard from shows no limit and acknowledged null; the reasons in words; health from the parts."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from gateway.config import load_config
from gateway.domain import Event, Interval, OptState, Signal, SignalName, SignalType
from gateway.runtime.loop import Runtime
from gateway.runtime.status_view import build

NOW = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
CONFIG = """
[site]
name = "doc"
wiring = "three-phase-400/230"
service_breaker_a = 63
power_factor = 0.9
timezone = "Europe/Berlin"

[[chargers]]
id = "cp-1"
protocol = "ocpp1.6"
phases = "L1-L2-L3"
max_a = 32
fallback_a = 6

[store]
path = "{store}"
"""


def runtime(tmp_path: Path) -> Runtime:
    path = tmp_path / "site.toml"
    path.write_text(CONFIG.format(store=tmp_path / "gw.sqlite"))
    return Runtime(load_config(path), clock=lambda: NOW, serve_status=False)


def level(value: float) -> tuple[Signal, ...]:
    return (Signal(SignalName.SIMPLE, SignalType.LEVEL, (Interval(timedelta(hours=1), value),)),)


async def test_the_document_of_a_runtime(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    running_out = Event("running-out", 0, NOW - timedelta(minutes=10), timedelta(hours=1), level(2.0),
                        opt=OptState.OPT_OUT)
    running = Event("running", 0, NOW - timedelta(minutes=5), timedelta(hours=1), level(1.0))
    later = Event("later", 0, NOW + timedelta(hours=2), timedelta(hours=1), level(3.0))
    rt.events = {e.event_id: e for e in (running_out, running, later)}
    await rt.decide_once()
    doc = build(rt, NOW)
    phases = {e["id"]: e["phase"] for e in doc["events"]}
    assert phases == {"running-out": "in force, not acted on", "running": "active", "later": "upcoming"}
    statuses = {e["id"]: e["status"] for e in doc["events"]}
    # the VTN's word, as in /api/events
    assert set(statuses.values()) <= {"far", "near", "active", "completed", "cancelled"}
    # what an event means in kW, the opted-out one as if acted on
    assert all(e["timeline"] and e["timeline"][0]["ev_kw"] is not None for e in doc["events"])
    # the service at PF 1 (63 A × 0.8 continuous × 230 V × 3), whatever power_factor says
    service_a = rt.circuit_limit[rt.site.service_id].limit_a
    assert doc["site"]["power_factor_basis"] == 1.0
    assert doc["site"]["limit_kw"] <= round(service_a * 3 * 230 / 1000, 2)
    assert doc["site"]["limit_cause"]
    assert doc["site"]["load_state"] == "estimated"  # no meter: the chargers plus the non-EV estimate
    (cp,) = doc["evses"]
    assert cp["online"] is False and cp["last_seen"] is None and cp["acknowledged"] is None
    assert cp["limit_a"] is None and cp["plugged"] is False and cp["state"] == "not heard from"
    assert doc["health"]["state"] == "degraded"  # a charger not heard from: counted at its maximum
    assert [r["component"] for r in doc["health"]["reasons"]] == ["charger"]
    assert doc["vtn"] == {**doc["vtn"], "configured": False}
    assert doc["store"]["state"] in ("ok", "unknown") and doc["store"]["size_bytes"] is None  # never opened
    assert doc["circuits"][0]["phases"][0]["limit_a"] == round(service_a, 1)


async def test_site_limit_without_a_dr_limit_is_the_service_at_pf_1(tmp_path: Path) -> None:
    rt = runtime(tmp_path)
    await rt.decide_once()
    doc = build(rt, NOW)
    service_a = rt.circuit_limit[rt.site.service_id].limit_a
    assert doc["site"]["limit_kw"] == round(service_a * 3 * rt.site.ln_v / 1000, 2)
    assert doc["site"]["limit_cause"].startswith("the service")
    assert rt.effective_limit_kw() is not None and rt.effective_limit_kw() < doc["site"]["limit_kw"]  # PF 0.9 there
