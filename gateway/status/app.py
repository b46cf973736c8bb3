"""The status endpoint (aiohttp): what the gateway is doing, for people, scripts and Prometheus, and the
operator's few writes.

`GET /api/status` is the JSON the runtime builds (vtn, events, site, evses, loop, demand, operator);
`GET /api/events` every stored event in full; `GET /api/log?since=` the recent log lines after a sequence
number or a time; `GET /healthz` answers 200 only while the loop has decided within three ticks (503
otherwise, so a supervisor can restart a wedged gateway); `GET /metrics` is Prometheus text from a
registry of its own (several apps in one process, as in tests, do not collide); `GET /` is one
server-rendered page with no scripts and nothing loaded from elsewhere: an inline SVG chart of site load
against the limit in force with the charging plan's site power for the next two hours, the month's demand
peak while a demand charge applies, the events and the chargers. The app reads from any `StatusSource`.
The writes (opt out of an event, a temporary site cap, pausing a charger) go to an `Operator`, need the
`[status] token` as a bearer token (401 without it, 403 while none is configured), answer 400 with one
line on a bad body, and each one is logged with what it changed and who asked.
"""

from __future__ import annotations

import hmac
import html
import json
import logging
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.domain import Event, OptState
from gateway.status.events import event_json

log = logging.getLogger("gateway.status")
Point = tuple[datetime, float | None, float | None]  # when, site load kW, limit kW
PlanPoint = tuple[datetime, datetime, float]  # a plan slot's start and end, planned site kW
# How far ahead the chart draws the plan: what the next couple of hours hold, beside the last two.
PLAN_AHEAD = timedelta(hours=2)
HISTORY_SPAN = timedelta(hours=2)  # how far back the chart draws the site load and the limit


class StatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...

    def healthy(self) -> bool: ...

    def history_points(self) -> Sequence[Point]: ...

    def plan_points(self) -> Sequence[PlanPoint]: ...

    def events_detail(self) -> list[dict[str, Any]]: ...

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]: ...


class Operator(Protocol):
    """What the writes change (the runtime)."""

    def set_operator_cap(self, kw: float | None, until: datetime | None = None) -> None: ...

    def set_paused(self, charger_id: str, paused: bool) -> bool: ...

    async def set_event_opt(self, event_id: str, choice: OptState | None, reason: str) -> Event | None: ...


SOURCE = web.AppKey("source", StatusSource)
REGISTRY = web.AppKey("registry", CollectorRegistry)
OPERATOR = web.AppKey("operator", Operator)
TOKEN = web.AppKey("token", str)
MAX_CAP_MINUTES = 7 * 24 * 60  # a "temporary" cap longer than a week is a config change, not an override


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
        operator = status.get("operator") or {}
        cap = GaugeMetricFamily("gateway_operator_cap_kw", "The operator's temporary site cap (kW), while one is set")
        if operator.get("cap_kw") is not None:
            cap.add_metric([], float(operator["cap_kw"]))
        yield cap
        paused = GaugeMetricFamily("gateway_evse_paused", "1 while an operator has paused the charger",
                                   labels=["evse"])
        for evse in status["evses"]:
            paused.add_metric([evse["id"]], 1.0 if evse["id"] in operator.get("paused", ()) else 0.0)
        yield paused
        alarm = GaugeMetricFamily("gateway_alarm", "1 per alarm in force (a fault the operator must see)",
                                  labels=["key", "severity"])
        for item in status.get("alarms") or []:
            alarm.add_metric([item["key"], item["severity"]], 1.0)
        yield alarm
        healthy = GaugeMetricFamily("gateway_healthy", "1 while the loop decides on time")
        healthy.add_metric([], 1.0 if self.source.healthy() else 0.0)
        yield healthy


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(request.app[SOURCE].status())


async def api_events(request: web.Request) -> web.Response:
    return web.json_response({"events": request.app[SOURCE].events_detail()})


def _bad(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


def _since(text: str | None) -> tuple[int, datetime | None]:
    """`since` is a sequence number (from an earlier answer's `next`) or an ISO 8601 time with its zone."""
    if text is None or text == "":
        return 0, None
    if text.isdigit():
        return int(text), None
    try:
        at = datetime.fromisoformat(text)
    except ValueError:
        at = None
    if at is None or at.tzinfo is None:
        raise _bad(f"since: {text!r} is neither a sequence number nor an ISO 8601 time with a zone "
                   "(e.g. 2026-01-05T12:00:00+00:00)")
    return 0, at


async def api_log(request: web.Request) -> web.Response:
    seq, at = _since(request.query.get("since"))
    entries = request.app[SOURCE].log_since(seq, at)
    last = entries[-1]["seq"] if entries else seq
    return web.json_response({"entries": entries, "next": last})


# ------------------------------------------------------------------------------------------------ writes


class OptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opt: Literal["optIn", "optOut"] | None  # None: the override is lifted, the rules decide again
    reason: str = Field(default="", max_length=200)


class CapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kw: float = Field(gt=0, le=100_000)
    minutes: float | None = Field(default=None, gt=0, le=MAX_CAP_MINUTES)  # None: until lifted


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


M = TypeVar("M", bound=BaseModel)


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    return f"{where}: {first['msg']}"


async def _body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        data = json.loads(raw) if raw.strip() else {}
    except (ValueError, UnicodeDecodeError):
        raise _bad("the body is not JSON") from None
    if not isinstance(data, dict):
        raise _bad("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise _bad(_problem(error)) from None


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _write(handler: Handler) -> Handler:
    """Only with the configured bearer token; refusals are logged too (someone is trying)."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        token = request.app.get(TOKEN)
        remote = request.remote or "?"
        if not token or OPERATOR not in request.app:
            log.warning("operator write refused: no status.token configured path=%s remote=%s", request.path, remote)
            raise web.HTTPForbidden(text=json.dumps({"error": "writes are disabled: set [status] token in the config"}),
                                    content_type="application/json")
        given = request.headers.get("Authorization", "")
        scheme, _, value = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token.encode()):
            log.warning("operator write refused: %s path=%s remote=%s",
                        "bad token" if given else "no token", request.path, remote)
            raise web.HTTPUnauthorized(
                text=json.dumps({"error": "a bearer token is needed: Authorization: Bearer <status.token>"}),
                content_type="application/json", headers={"WWW-Authenticate": 'Bearer realm="gateway"'})
        return await handler(request)

    return guarded


def _clock_now(request: web.Request) -> datetime:
    now = request.app[SOURCE].status().get("now")
    return datetime.fromisoformat(now) if isinstance(now, str) else datetime.now(UTC)


async def _stored_answer(request: web.Request, answer: dict[str, Any]) -> web.Response:
    """200 (the answer as it is) once the change is in the store; 202 with "stored": false and a warning when
    it could not be stored (it is in force all the same, held in memory and retried: a restart would lose
    it). An operator without a store to ask (tests) counts as stored."""
    stored = getattr(request.app[OPERATOR], "operator_stored", None)
    problem = await stored() if stored is not None else None
    if problem is None:
        return web.json_response(answer)
    log.warning("operator write not stored: %s (in force in memory, retried)", problem)
    return web.json_response({**answer, "stored": False,
                              "warning": f"in force but not stored ({problem}): it is retried, and lost if the "
                                         "gateway restarts before the store takes it"}, status=202)


async def write_opt(request: web.Request) -> web.StreamResponse:
    from gateway.store.vtn import StoreWriteError

    body = await _body(request, OptBody)
    event_id = request.match_info["event_id"]
    choice = OptState(body.opt) if body.opt is not None else None
    try:
        event = await request.app[OPERATOR].set_event_opt(event_id, choice, body.reason)
    except ValueError as error:
        raise web.HTTPConflict(text=json.dumps({"error": str(error)}), content_type="application/json") from None
    except StoreWriteError as error:
        log.warning("operator write=opt event=%s refused: %s", event_id, error)
        raise web.HTTPServiceUnavailable(text=json.dumps({"error": str(error), "stored": False}),
                                         content_type="application/json") from None
    if event is None:
        raise web.HTTPNotFound(text=json.dumps({"error": f"no event {event_id!r}"}), content_type="application/json")
    log.info("operator write=opt event=%s opt=%s reason=%r remote=%s", event_id,
             body.opt or "rules", body.reason, request.remote)
    return web.json_response({"event": event_json(event, _clock_now(request))})


async def write_cap(request: web.Request) -> web.StreamResponse:
    body = await _body(request, CapBody)
    now = _clock_now(request)
    until = now + timedelta(minutes=body.minutes) if body.minutes is not None else None
    request.app[OPERATOR].set_operator_cap(body.kw, until)
    log.info("operator write=cap kw=%g until=%s remote=%s", body.kw,
             until.isoformat() if until else "lifted", request.remote)
    return await _stored_answer(request, {"cap_kw": body.kw, "cap_until": until.isoformat() if until else None})


async def delete_cap(request: web.Request) -> web.StreamResponse:
    await _body(request, EmptyBody)
    request.app[OPERATOR].set_operator_cap(None)
    log.info("operator write=cap kw=none remote=%s", request.remote)
    return await _stored_answer(request, {"cap_kw": None, "cap_until": None})


def _pause(paused: bool) -> Handler:
    async def write(request: web.Request) -> web.StreamResponse:
        await _body(request, EmptyBody)
        charger = request.match_info["charger_id"]
        if not request.app[OPERATOR].set_paused(charger, paused):
            raise web.HTTPNotFound(text=json.dumps({"error": f"no charger {charger!r}"}),
                                   content_type="application/json")
        log.info("operator write=%s charger=%s remote=%s", "pause" if paused else "resume", charger, request.remote)
        return await _stored_answer(request, {"charger": charger, "paused": paused})

    return write


async def healthz(request: web.Request) -> web.Response:
    """200 "ok" while the loop decides on time and no critical alarm is in force (warnings are listed
    under it); 503 otherwise, its body naming why, one line each."""
    source = request.app[SOURCE]
    alarms = source.status().get("alarms") or []
    critical = [a for a in alarms if a.get("severity") == "critical"]
    warnings = [a for a in alarms if a.get("severity") != "critical"]
    lines = [f"{a['severity']} {a['key']}: {a['message']}" for a in (*critical, *warnings)]
    if not source.healthy():
        return web.Response(status=503, text="\n".join(["the control loop has not decided recently", *lines]) + "\n")
    if critical:
        return web.Response(status=503, text="\n".join(lines) + "\n")
    return web.Response(text="\n".join(["ok", *lines]) + "\n")


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
    """Site load (line) against the limit in force (dashed step line) over the last `HISTORY_SPAN`, and the
    planned site power from the last point on (dotted step line, up to `PLAN_AHEAD`), as inline SVG."""
    pad = 36
    if len(points) < 2:
        return (f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}">'
                f'<text x="{pad}" y="{height // 2}">collecting data…</text></svg>')
    # A fixed window (the last `HISTORY_SPAN` to now, then the plan): a gateway that started a minute ago
    # draws a minute at the right scale, not a minute stretched over the whole width.
    t1 = points[-1][0]
    t0 = t1 - HISTORY_SPAN
    points = [p for p in points if p[0] >= t0]
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
    now_x = xy(t1, 0.0).split(",")[0]
    # Times under the axis (UTC, as on the rest of the page): the first point, now, and the plan's end.
    ticks = [(t0, "start"), (t1, "middle" if plan else "end")] + ([(plan[-1][0], "end")] if plan else [])
    labels = "".join(
        f'<text x="{xy(at, 0.0).split(",")[0]}" y="{axis + 16}" font-size="11" text-anchor="{anchor}">'
        f'{at.strftime("%H:%M")}{" now" if at == t1 else ""}</text>'
        for at, anchor in ticks
    )
    # The legend: a short stroke of each line's own style beside its name.
    legend = ""
    for n, (name, colour, dash) in enumerate((("load", "#1f77b4", ""), ("limit", "#d62728", "6 4"),
                                              ("planned", "#2ca02c", "2 3"))):
        x = width - pad - 270 + 90 * n
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        legend += (f'<line x1="{x}" y1="{pad - 14}" x2="{x + 24}" y2="{pad - 14}" stroke="{colour}" '
                   f'stroke-width="2"{dashes}/>'
                   f'<text x="{x + 30}" y="{pad - 10}" font-size="12" fill="{colour}">{name}</text>')
    # Light lines at quarters of the scale, each labelled in kW (the labels right-aligned to the axis).
    grid = ""
    for quarter in range(5):
        value = top * quarter / 4
        y = xy(t0, value).split(",")[1]
        if quarter:
            grid += f'<line x1="{pad}" y1="{y}" x2="{width - pad}" y2="{y}" stroke="#eee"/>'
        grid += f'<text x="{pad - 4}" y="{y}" font-size="11" text-anchor="end" dy="4">{value:.3g}</text>'
    return (
        f'<svg id="chart" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
        f'role="img" aria-label="site load against the limit">'
        f'<line x1="{pad}" y1="{axis}" x2="{width - pad}" y2="{axis}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{axis}" stroke="#888"/>'
        f'<line x1="{now_x}" y1="{pad}" x2="{now_x}" y2="{axis}" stroke="#ccc" stroke-dasharray="2 2"/>'
        f'<text x="{pad - 4}" y="{pad - 14}" font-size="11" text-anchor="end">kW</text>{grid}{labels}'
        f'<polyline id="load" fill="none" stroke="#1f77b4" stroke-width="2" points="{load}"/>'
        f'<polyline id="limit" fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="6 4" '
        f'points="{limit}"/>'
        f'<polyline id="plan" fill="none" stroke="#2ca02c" stroke-width="2" stroke-dasharray="2 3" '
        f'points="{planned_line}"/>'
        f"{legend}"
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


def _signals(event: dict[str, Any]) -> str:
    """`SIMPLE level 2, 1` per signal: the values of its intervals in order."""
    return "; ".join(f"{s['name']} {s['type']} {', '.join(f'{v:g}' for v in s['values'])}" for s in event["signals"])


def _events_table(events: Sequence[dict[str, Any]], element_id: str) -> str:
    if not events:
        return f'<p id="{element_id}">none</p>'
    rows = "".join(
        f"<tr><td>{_cell(e['id'])}</td><td>{_cell(_signals(e))}</td>"
        f"<td>{_clock(e['start'])}</td><td>{_clock(e['end']) if e['end'] else 'until cancelled'}</td>"
        f"<td>{_cell(e['opt'])}{' (test)' if e.get('test') else ''}</td></tr>"
        for e in events
    )
    return (f'<table id="{element_id}"><tr><th>event</th><th>signals</th><th>from</th><th>to</th><th>opt</th></tr>'
            f"{rows}</table>")


def render_page(status: dict[str, Any], points: Sequence[Point], planned: Sequence[PlanPoint] = ()) -> str:
    site, vtn = status["site"], status["vtn"]
    rows = "".join(
        f"<tr><td>{_cell(e['id'])}</td><td>{_cell(e['state'])}</td><td>{_cell(e['limit_a'])}</td>"
        f"<td>{_cell(e['current_a'])}</td><td>{_cell(e['reason'])}</td></tr>"
        for e in status["evses"]
    )
    active = [e for e in status["events"] if e["active"]]
    coming = [e for e in status["events"] if not e["active"]]
    operator = status.get("operator") or {}
    operator_line = ""
    if operator.get("cap_kw") is not None or operator.get("paused"):
        parts = []
        if operator.get("cap_kw") is not None:
            until = f" until {_clock(operator['cap_until'])}" if operator.get("cap_until") else " until lifted"
            parts.append(f"site cap <b>{_cell(operator['cap_kw'])} kW</b>{until}")
        if operator.get("paused"):
            parts.append(f"paused: {_cell(', '.join(operator['paused']))}")
        operator_line = f"\n<p id=\"operator\">Operator: {'; '.join(parts)}.</p>"
    demand = status.get("demand") or {}
    demand_line = ""
    if demand.get("charge_per_kw") is not None:
        # The month's peak is what the demand charge is billed on: people need it beside the load.
        demand_line = (f"\n<p id=\"demand\">Demand charge {_cell(demand['charge_per_kw'])}/kW: month's peak so far "
                       f"<b>{_cell(demand.get('month_peak_kw'))} kW</b>, site held under "
                       f"{_cell(demand.get('peak_target_kw'))} kW.</p>")
    ev_limit = f"{_cell(site['ev_limit_kw'])} kW" if site.get("ev_limit_kw") is not None else "none"
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
EV limit {ev_limit}. VTN {vtn_line}. Decisions: {status['loop']['decisions']}.</p>{demand_line}\
{operator_line}
{chart_svg(points, planned)}
<h2>Events in force (times UTC)</h2>{_events_table(active, "active-events")}
<h2>Upcoming events</h2>{_events_table(coming, "upcoming-events")}
<h2>Chargers</h2>
<table id="chargers"><tr><th>charger</th><th>state</th><th>limit (A)</th><th>draw (A)</th><th>why</th></tr>
{rows}</table>
</body></html>
"""


def make_app(source: StatusSource, *, token: str | None = None, operator: Operator | None = None) -> web.Application:
    """The app; writes work only with both an `operator` and a `token` (403 otherwise)."""
    app = web.Application(client_max_size=64 * 1024)  # the writes' bodies are a few bytes
    registry = CollectorRegistry(auto_describe=True)
    registry.register(_Metrics(source))
    app[SOURCE] = source
    app[REGISTRY] = registry
    if token:
        app[TOKEN] = token
    if operator is not None:
        app[OPERATOR] = operator
    app.router.add_get("/", page)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/log", api_log)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/events/{event_id}/opt", _write(write_opt))
    app.router.add_post("/api/cap", _write(write_cap))
    app.router.add_delete("/api/cap", _write(delete_cap))
    app.router.add_post("/api/evses/{charger_id}/pause", _write(_pause(True)))
    app.router.add_post("/api/evses/{charger_id}/resume", _write(_pause(False)))
    return app


async def serve(source: StatusSource, host: str, port: int, *, token: str | None = None,
                operator: Operator | None = None) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (to clean up) and the port (the OS's pick when port is 0)."""
    runner = web.AppRunner(make_app(source, token=token, operator=operator), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    await site.start()
    server = site._server  # aiohttp has no public way to learn the port the OS picked
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
