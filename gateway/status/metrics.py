"""`GET /metrics`: Prometheus text computed at scrape time from the status document, so it can never
disagree with `/api/status`, plus the counters the runtime and the adapters keep."""

from __future__ import annotations

import logging
import platform
from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import Any

from aiohttp import web
from prometheus_client import generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector

from gateway.status.document import build_version
from gateway.status.source import REGISTRY, SOURCE, document

log = logging.getLogger("gateway.status")


def _g(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class GatewayMetrics(Collector):
    """Gauges computed at scrape time from the status document, so they can never disagree with
    /api/status; counters the adapters keep (VTN rounds, Modbus errors, restarts) read from them."""

    def __init__(self, app: web.Application) -> None:
        self.app = app

    def collect(self) -> Iterator[Metric]:
        status = document(self.app)
        source = self.app[SOURCE]
        site = status["site"]
        info = InfoMetricFamily("gateway_build", "The gateway's version", labels=["version", "python"])
        info.add_metric([build_version(), platform.python_version()], {})
        yield info
        for name, key, doc in (
            ("gateway_site_load_watts", "load_kw", "Site power now, measured or estimated (W, absent while the "
             "service meter is stale)"),
            ("gateway_site_limit_watts", "limit_kw", "Site power allowed now, whichever limit binds (W, power "
             "factor 1 like the load)"),
            ("gateway_site_ev_watts", "ev_kw", "Power the chargers report drawing (W)"),
            ("gateway_operator_cap_watts", "operator_cap_kw", "The operator's temporary site cap (W), while set"),
        ):
            gauge = _g(name, doc)
            value = site.get(key)
            if key == "operator_cap_kw":
                value = (status.get("operator") or {}).get("cap_kw", value)
            if value is not None:
                gauge.add_metric([], float(value) * 1000.0)
            yield gauge
        cond_load = _g("gateway_conductor_current_amperes", "Current per circuit and phase conductor (A)",
                       ["circuit", "phase"])
        cond_limit = _g("gateway_conductor_limit_amperes", "Usable current per circuit and phase conductor (A)",
                        ["circuit", "phase"])
        for circuit in status.get("circuits") or []:
            for p in circuit["phases"]:
                if p["load_a"] is not None:
                    cond_load.add_metric([circuit["id"], p["phase"]], float(p["load_a"]))
                cond_limit.add_metric([circuit["id"], p["phase"]], float(p["limit_a"]))
        yield cond_load
        yield cond_limit
        families = {
            "limit": _g("gateway_evse_limit_amperes", "Limit in force per charger (A)", ["evse"]),
            "current": _g("gateway_evse_current_amperes", "Measured current per charger, highest phase (A)",
                          ["evse"]),
            "power": _g("gateway_evse_power_watts", "Power per charger (W)", ["evse"]),
            "energy": _g("gateway_evse_session_energy_joules", "Energy of the session under way (J)", ["evse"]),
            "plugged": _g("gateway_evse_plugged", "1 while a car is plugged in", ["evse"]),
            "online": _g("gateway_evse_up", "1 while the charger is online and reporting", ["evse"]),
            "acked": _g("gateway_evse_limit_acknowledged", "1 once the charger acknowledged its limit (0: not "
                        "yet; absent: nothing sent)", ["evse"]),
            "over": _g("gateway_evse_over_limit", "1 while the charger draws above its limit", ["evse"]),
            "seen": _g("gateway_evse_last_seen_timestamp_seconds", "When the charger last reported (Unix time)",
                       ["evse"]),
            "paused": _g("gateway_evse_paused", "1 while an operator has paused the charger", ["evse"]),
        }
        paused = set((status.get("operator") or {}).get("paused") or ())
        for evse in status["evses"]:
            cid = [evse["id"]]
            for key, field, scale in (("limit", "limit_a", 1.0), ("current", "current_a", 1.0),
                                      ("power", "power_kw", 1000.0), ("energy", "session_kwh", 3.6e6)):
                if evse.get(field) is not None:
                    families[key].add_metric(cid, float(evse[field]) * scale)
            families["plugged"].add_metric(cid, 1.0 if evse.get("plugged", evse.get("connected")) else 0.0)
            families["online"].add_metric(cid, 1.0 if evse.get("online", True) else 0.0)
            if evse.get("acknowledged") is not None:
                families["acked"].add_metric(cid, 1.0 if evse["acknowledged"] else 0.0)
            families["over"].add_metric(cid, 1.0 if evse.get("over_limit") else 0.0)
            if evse.get("last_seen"):
                families["seen"].add_metric(cid, datetime.fromisoformat(evse["last_seen"]).timestamp())
            families["paused"].add_metric(cid, 1.0 if evse["id"] in paused else 0.0)
        yield from families.values()
        up = _g("gateway_component_up", "1 while the component works (vtn, meter, store, clock)", ["component", "id"])
        stale = _g("gateway_meter_stale", "1 while the meter has no good reading within stale_after_s", ["meter"])
        age = _g("gateway_meter_reading_age_seconds", "Age of the meter's last good reading (s)", ["meter"])
        vtn = status["vtn"]
        if vtn.get("configured"):
            up.add_metric(["vtn", vtn.get("ven_id") or "ven"], 1.0 if vtn.get("reachable") else 0.0)
        for meter in status.get("meters") or []:
            up.add_metric(["meter", meter["id"]], 1.0 if meter["state"] == "fresh" else 0.0)
            stale.add_metric([meter["id"]], 1.0 if meter["state"] in ("stale", "unreachable") else 0.0)
            if meter.get("age_s") is not None:
                age.add_metric([meter["id"]], float(meter["age_s"]))
        store = status.get("store") or {}
        if store.get("writable") is not None:
            up.add_metric(["store", "store"], 1.0 if store["writable"] else 0.0)
        if status.get("clock"):
            up.add_metric(["clock", "clock"], 1.0 if status["clock"]["state"] == "ok" else 0.0)
        yield up
        yield stale
        yield age
        registered = _g("gateway_vtn_registered", "1 while registered with a VTN that answers")
        registered.add_metric([], 1.0 if vtn.get("registered") else 0.0)
        yield registered
        last_poll = _g("gateway_vtn_last_poll_timestamp_seconds", "When a round with the VTN last went through")
        if vtn.get("last_poll"):
            last_poll.add_metric([], datetime.fromisoformat(vtn["last_poll"]).timestamp())
        yield last_poll
        size = _g("gateway_store_size_bytes", "The store's file and its write-ahead log on disk (bytes)")
        written = _g("gateway_store_last_write_timestamp_seconds", "When the store's files last changed")
        if store.get("size_bytes") is not None:
            size.add_metric([], float(store["size_bytes"]))
        if store.get("last_write"):
            written.add_metric([], datetime.fromisoformat(store["last_write"]).timestamp())
        yield size
        yield written
        alarm = _g("gateway_alarm", "1 per alarm in force (a fault the operator must see)", ["key", "severity"])
        for item in status.get("alarms") or []:
            alarm.add_metric([item["key"], item["severity"]], 1.0)
        yield alarm
        healthy = _g("gateway_healthy", "1 while /healthz answers 200 (ok or degraded)")
        health = status["health"]["state"]
        healthy.add_metric([], 0.0 if health == "failing" else 1.0)
        yield healthy
        state = _g("gateway_health_state", "1 for the site's health state now", ["state"])
        for name in ("ok", "degraded", "failing"):
            state.add_metric([name], 1.0 if health == name else 0.0)
        yield state
        yield from _pv_metrics(status.get("pv"))
        yield from self._counters(status, source)

    def _counters(self, status: dict[str, Any], source: Any) -> Iterator[Metric]:
        polls = CounterMetricFamily("gateway_vtn_polls", "Rounds with the VTN by result", labels=["result"])
        for result, count in (status["vtn"].get("polls") or {}).items():
            polls.add_metric([result], float(count))
        yield polls
        restarts = CounterMetricFamily("gateway_restarts", "Adapter restarts after a crash", labels=["adapter"])
        for adapter, count in (status["loop"].get("restarts") or {}).items():
            restarts.add_metric([adapter], float(count))
        yield restarts
        modbus = CounterMetricFamily("gateway_modbus_errors", "Failed Modbus calls (no connection, timeouts, "
                                     "exception answers)", labels=["link"])
        pool = getattr(source, "pool", None)
        for link in (pool.links() if pool is not None and hasattr(pool, "links") else []):
            modbus.add_metric([link.name], float(getattr(link, "errors", 0)))
        yield modbus
        counters = getattr(source, "counters", None)
        if counters is None:
            # Until the runtime feeds its Counters: the decisions it counts itself (no durations).
            decisions = CounterMetricFamily("gateway_decisions", "Decisions made since the process started")
            decisions.add_metric([], float(status["loop"]["decisions"]))
            yield decisions
        else:
            yield from counters.registry.collect()


def _pv_metrics(pv: dict[str, Any] | None) -> Iterator[Metric]:
    """Solar first: PV, grid import/export, the surplus handed to EVs and each charger's mode."""
    if not pv:
        return
    for name, key, doc in (
        ("gateway_pv_watts", "pv_kw", "PV power the inverters report (W)"),
        ("gateway_grid_import_watts", "import_kw", "Power imported at the grid meter (W)"),
        ("gateway_grid_export_watts", "export_kw", "Power exported at the grid meter (W)"),
        ("gateway_pv_surplus_watts", "surplus_kw", "What the EVs may draw keeping the grid at the export target "
         "(W; absent while unknown)"),
        ("gateway_pv_to_evs_watts", "handed_kw", "EV power covered by the surplus now (W)"),
    ):
        gauge = _g(name, doc)
        if pv.get(key) is not None:
            gauge.add_metric([], float(pv[key]) * 1000.0)
        yield gauge
    mode = _g("gateway_evse_mode", "1 for the charge mode each charger is in", ["evse", "mode"])
    for cid, charger in (pv.get("chargers") or {}).items():
        for name in ("now", "pv", "minpv", "plan"):
            mode.add_metric([cid, name], 1.0 if charger.get("mode") == name else 0.0)
    yield mode


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})
