"""The status endpoint (aiohttp): what the gateway is doing, for people, scripts and Prometheus.

`GET /api/status` is the JSON the runtime builds (vtn, events, site, evses, loop, demand); `GET /healthz`
answers 200 only while the loop has decided within three ticks (503 otherwise, so a supervisor can restart
a wedged gateway); `GET /metrics` is Prometheus text from a registry of its own (several apps in one
process, as in tests, do not collide); `GET /` is one server-rendered page with no scripts and nothing
loaded from elsewhere: an inline SVG chart of site load against the limit in force with the charging
plan's site power for the next two hours, the month's demand peak while a demand charge applies, the
events and the chargers. The app reads from any `StatusSource`; it never changes the gateway (writes come
later).
"""

from __future__ import annotations

import html
from collections.abc import Iterator, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

Point = tuple[datetime, float | None, float | None]  # when, site load kW, limit kW
PlanPoint = tuple[datetime, datetime, float]  # a plan slot's start and end, planned site kW
# How far ahead the chart draws the plan: what the next couple of hours hold, beside the last two.
PLAN_AHEAD = timedelta(hours=2)


class StatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...

    def healthy(self) -> bool: ...

    def history_points(self) -> Sequence[Point]: ...

    def plan_points(self) -> Sequence[PlanPoint]: ...


SOURCE = web.AppKey("source", StatusSource)
REGISTRY = web.AppKey("registry", CollectorRegistry)


class _Metrics(Collector):
    """Gauges computed at scrape time from the status, so they can never disagree with /api/status."""

    def __init__(self, source: StatusSource) -> None:
        self.source = source

    def collect(self) -> Iterator[Metric]:
        status = self.source.status()
        site = status["site"]
        for name, key, doc in (("gateway_site_load_kw", "load_kw", "Site power now (kW)"),
                               ("gateway_site_limit_kw", "limit_kw", "Site power limit in force (kW)")):
            gauge = GaugeMetricFamily(name, doc)
            if site.get(key) is not None:
                gauge.add_metric([], float(site[key]))
            yield gauge
        limit = GaugeMetricFamily("gateway_evse_limit_amps", "Limit in force per charger (A)", labels=["evse"])
        current = GaugeMetricFamily("gateway_evse_current_amps", "Measured current per charger (A)", labels=["evse"])
        connected = GaugeMetricFamily("gateway_evse_connected", "1 when a car is plugged in", labels=["evse"])
        for evse in status["evses"]:
            if evse["limit_a"] is not None:
                limit.add_metric([evse["id"]], float(evse["limit_a"]))
            if evse["current_a"] is not None:
                current.add_metric([evse["id"]], float(evse["current_a"]))
            connected.add_metric([evse["id"]], 1.0 if evse["connected"] else 0.0)
        yield limit
        yield current
        yield connected
        decisions = GaugeMetricFamily("gateway_decisions", "Decisions made since start")
        decisions.add_metric([], float(status["loop"]["decisions"]))
        yield decisions
        registered = GaugeMetricFamily("gateway_vtn_registered", "1 while registered with the VTN")
        registered.add_metric([], 1.0 if status["vtn"]["registered"] else 0.0)
        yield registered
        healthy = GaugeMetricFamily("gateway_healthy", "1 while the loop decides on time")
        healthy.add_metric([], 1.0 if self.source.healthy() else 0.0)
        yield healthy


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SOURCE].status())


async def healthz(request: web.Request) -> web.Response:
    if request.app[SOURCE].healthy():
        return web.Response(text="ok\n")
    return web.Response(status=503, text="the control loop has not decided recently\n")


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


async def page(request: web.Request) -> web.Response:
    source = request.app[SOURCE]
    text = render_page(source.status(), source.history_points(), source.plan_points())
    return web.Response(text=text, content_type="text/html")


def _planned(planned: Sequence[PlanPoint], start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    """The plan's site power as a step line, cut to [start, end)."""
    out: list[tuple[datetime, float]] = []
    for begin, finish, kw in sorted(planned):
        begin, finish = max(begin, start), min(finish, end)
        if finish > begin:
            out += [(begin, kw), (finish, kw)]
    return out


def chart_svg(points: Sequence[Point], planned: Sequence[PlanPoint] = (), width: int = 720,
              height: int = 220) -> str:
    """Site load (line) against the limit in force (dashed step line), and the planned site power from
    the last point on (dotted step line, up to `PLAN_AHEAD`), as inline SVG."""
    pad = 36
    if len(points) < 2:
        return (f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                f'<text x="{pad}" y="{height // 2}">collecting data…</text></svg>')
    t0, t1 = points[0][0], points[-1][0]
    plan = _planned(planned, t1, t1 + PLAN_AHEAD)
    values = [v for _, load, limit in points for v in (load, limit) if v is not None] + [v for _, v in plan]
    top = max([*values, 1.0]) * 1.1
    span = max(((plan[-1][0] if plan else t1) - t0).total_seconds(), 1.0)

    def xy(at: datetime, value: float) -> str:
        x = pad + (width - 2 * pad) * (at - t0).total_seconds() / span
        y = height - pad - (height - 2 * pad) * value / top
        return f"{x:.1f},{y:.1f}"

    load = " ".join(xy(at, v) for at, v, _ in points if v is not None)
    limit = " ".join(xy(at, v) for at, _, v in points if v is not None)
    planned_line = " ".join(xy(at, v) for at, v in plan)
    axis = height - pad
    return (
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="site load against the limit">'
        f'<line x1="{pad}" y1="{axis}" x2="{width - pad}" y2="{axis}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{axis}" stroke="#888"/>'
        f'<text x="4" y="{pad}" font-size="11">{top:.0f} kW</text>'
        f'<text x="4" y="{axis}" font-size="11">0</text>'
        f'<polyline id="load" fill="none" stroke="#1f77b4" stroke-width="2" points="{load}"/>'
        f'<polyline id="limit" fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="6 4" '
        f'points="{limit}"/>'
        f'<polyline id="plan" fill="none" stroke="#2ca02c" stroke-width="2" stroke-dasharray="2 3" '
        f'points="{planned_line}"/>'
        f'<text x="{width - pad - 210}" y="{pad - 10}" font-size="12" fill="#1f77b4">load</text>'
        f'<text x="{width - pad - 150}" y="{pad - 10}" font-size="12" fill="#d62728">limit</text>'
        f'<text x="{width - pad - 90}" y="{pad - 10}" font-size="12" fill="#2ca02c">planned</text>'
        f"</svg>"
    )


def _cell(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return html.escape(str(value))


def _clock(value: object) -> str:
    """An ISO time as HH:MM:SS (UTC) for people; anything else as it is."""
    if not isinstance(value, str):
        return _cell(value)
    try:
        return datetime.fromisoformat(value).strftime("%H:%M:%S")
    except ValueError:
        return _cell(value)


def render_page(status: dict[str, Any], points: Sequence[Point], planned: Sequence[PlanPoint] = ()) -> str:
    site, vtn = status["site"], status["vtn"]
    rows = "".join(
        f"<tr><td>{_cell(e['id'])}</td><td>{_cell(e['state'])}</td><td>{_cell(e['limit_a'])}</td>"
        f"<td>{_cell(e['current_a'])}</td><td>{_cell(e['reason'])}</td></tr>"
        for e in status["evses"]
    )
    events = "".join(
        f"<li>{_cell(e['id'])}: {_cell(', '.join(s['name'] for s in e['signals']))} from {_clock(e['start'])} "
        f"to {_clock(e['end'])}{' (active)' if e['active'] else ''} opt={_cell(e['opt'])}</li>"
        for e in status["events"]
    ) or "<li>none</li>"
    demand = status.get("demand") or {}
    demand_line = ""
    if demand.get("charge_per_kw") is not None:
        # The month's peak is what the demand charge is billed on: people need it beside the load.
        demand_line = (f"\n<p id=\"demand\">Demand charge {_cell(demand['charge_per_kw'])}/kW: month's peak so far "
                       f"<b>{_cell(demand.get('month_peak_kw'))} kW</b>, site held under "
                       f"{_cell(demand.get('peak_target_kw'))} kW.</p>")
    vtn_line = "not configured"
    if vtn["configured"]:
        vtn_line = f"registered: {'yes' if vtn['registered'] else 'no'}, last poll: {_clock(vtn['last_poll'])}"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta http-equiv="refresh" content="5">
<title>{html.escape(site['name'])}: gateway status</title>
<style>body{{font-family:sans-serif;margin:1.5em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:.2em .6em;text-align:left}}</style></head>
<body><h1>{html.escape(site['name'])}</h1>
<p>Site load <b>{_cell(site['load_kw'])} kW</b>, limit in force <b>{_cell(site['limit_kw'])} kW</b>,
EV limit {_cell(site['ev_limit_kw'])} kW. VTN {vtn_line}. Decisions: {status['loop']['decisions']}.</p>{demand_line}
{chart_svg(points, planned)}
<h2>Events (times UTC)</h2><ul>{events}</ul>
<h2>Chargers</h2>
<table><tr><th>charger</th><th>state</th><th>limit (A)</th><th>current (A)</th><th>why</th></tr>{rows}</table>
</body></html>
"""


def make_app(source: StatusSource) -> web.Application:
    app = web.Application()
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Metrics(source))
    app[SOURCE] = source
    app[REGISTRY] = registry
    app.router.add_get("/", page)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    return app


async def serve(source: StatusSource, host: str, port: int) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (to clean up) and the port (the OS's pick when port is 0)."""
    runner = web.AppRunner(make_app(source), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    await site.start()
    server = site._server  # aiohttp has no public way to learn the port the OS picked
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
