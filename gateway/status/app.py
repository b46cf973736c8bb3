"""The status endpoint (aiohttp): what the gateway is doing, for people, scripts and Prometheus, and the
operator's few writes.

Every reading comes from one status document (`gateway.status.document`): `GET /api/status` is it as JSON,
`GET /api/alarms` its alarms in force, `GET /healthz` its health (200 `ok` or `degraded`, 503 `failing`,
with a JSON list of reasons), `GET /metrics` Prometheus text computed from it at scrape time (plus the
runtime's counters), `GET /` the page rendered from it, kept live by `GET /api/stream` (server-sent events,
one rendered update a tick). `GET /api/events` every stored event in full; `GET /api/log?since=` the recent
log lines. The writes (opt out of an event, a temporary site cap, pausing a charger) go to an `Operator`,
need the `[status] token` as a bearer token (401 without it, 403 while none is configured), answer 400 with
one line on a bad body, and each one is logged with what it changed and who asked. Every error, 404, 405
and 413 included, is a JSON object `{"error": "..."}`.

The alarms and the day of history come with the source: the runtime's own watch (`gateway.runtime.watch`)
keeps them, ticked in its control loop, so they hold whether anyone reads this endpoint or not.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import logging
import math
import platform
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, Protocol, TypeVar

from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, InfoMetricFamily, Metric
from prometheus_client.registry import Collector
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError

from gateway.domain import Event, OptState
from gateway.status.document import build_version, health_of
from gateway.status.events import event_json
from gateway.status.page import (
    DEFAULT_WINDOW,
    SCRIPT,
    WINDOWS,
    PlanPoint,
    Point,
    chart_svg,
    render_live,
    render_page,
)
from gateway.wording import number_problem

__all__ = ["PlanPoint", "Point", "chart_svg", "make_app", "render_page", "serve"]

log = logging.getLogger("gateway.status")
HISTORY_SPAN = timedelta(hours=2)  # what the runtime keeps a point a second of
CSP = ("default-src 'none'; script-src 'self'; style-src 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'none'; frame-ancestors 'none'; base-uri 'none'")


class StatusSource(Protocol):
    def status(self) -> dict[str, Any]: ...

    def healthy(self) -> bool: ...

    def history_points(self) -> Sequence[Point]: ...

    def day_points(self) -> Sequence[Point]: ...

    def plan_points(self) -> Sequence[PlanPoint]: ...

    def events_detail(self) -> list[dict[str, Any]]: ...

    def log_since(self, seq: int = 0, at: datetime | None = None) -> list[dict[str, object]]: ...


class Operator(Protocol):
    """What the writes change (the runtime)."""

    def set_operator_cap(self, kw: float | None, until: datetime | None = None) -> None: ...

    def set_paused(self, charger_id: str, paused: bool) -> bool: ...

    def set_charge_mode(self, charger_id: str, mode: str | None, session: bool = True) -> bool: ...

    async def set_event_opt(self, event_id: str, choice: OptState | None, reason: str) -> Event | None: ...


SOURCE = web.AppKey("source", StatusSource)
REGISTRY = web.AppKey("registry", CollectorRegistry)
OPERATOR = web.AppKey("operator", Operator)
TOKEN = web.AppKey("token", str)
MAX_CAP_MINUTES = 7 * 24 * 60  # a "temporary" cap longer than a week is a config change, not an override


def document(app: web.Application) -> dict[str, Any]:
    """The status document with its health (a source that does not give one gets it worked out here)."""
    source = app[SOURCE]
    status = source.status()
    if "health" not in status:
        status["health"] = health_of(status, source.healthy())
    return status


def _g(name: str, doc: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, labels=list(labels))


class _Metrics(Collector):
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


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


async def api_alarms(request: web.Request) -> web.Response:
    status = document(request.app)
    return web.json_response({"alarms": status.get("alarms") or [], "health": status["health"]})


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


def _finite(value: object) -> object:
    """JSON from some clients carries NaN and Infinity; neither is a limit anyone can hold a site under."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number: a cap must be a real figure "
                         "(NaN would compare false with every load, infinity would be no cap at all)")
    return value


# A number written as a number: booleans and quoted numbers are refused, as in the config.
Number = Annotated[float, Strict(), BeforeValidator(_finite)]


class CapBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kw: Number = Field(gt=0, le=100_000)
    minutes: Number | None = Field(default=None, gt=0, le=MAX_CAP_MINUTES)  # None: until lifted


class EmptyBody(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ModeBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    mode: Literal["now", "pv", "minpv", "plan"] | None  # None: back to the config's mode
    session: bool = True  # only until the car is unplugged


M = TypeVar("M", bound=BaseModel)


def _problem(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) for p in first["loc"]) or "body"
    message = number_problem(first["type"], first.get("input")) or first["msg"]
    return f"{where}: {message.removeprefix('Value error, ')}"


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
    from gateway.records import StoreWriteError

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


async def write_mode(request: web.Request) -> web.StreamResponse:
    body = await _body(request, ModeBody)
    charger = request.match_info["charger_id"]
    if not request.app[OPERATOR].set_charge_mode(charger, body.mode, body.session):
        raise web.HTTPNotFound(text=json.dumps({"error": f"no charger {charger!r}"}), content_type="application/json")
    log.info("operator write=mode charger=%s mode=%s session=%s remote=%s", charger, body.mode or "config",
             body.session, request.remote)
    return web.json_response({"charger": charger, "mode": body.mode, "session": body.session})


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


async def healthz(request: web.Request) -> web.Response:
    """200 while the site is under control (`ok`, or `degraded` with its reasons), 503 while it is not
    (`failing`): JSON `{"status": ..., "reasons": [{component, id, state, message}]}`."""
    health = document(request.app)["health"]
    code = 503 if health["state"] == "failing" else 200
    return web.json_response({"status": health["state"], "reasons": health["reasons"]}, status=code)


async def metrics(request: web.Request) -> web.Response:
    body = generate_latest(request.app[REGISTRY])
    return web.Response(body=body, headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})


def _window(request: web.Request) -> str:
    window = request.query.get("window") or DEFAULT_WINDOW
    return window if window in WINDOWS else DEFAULT_WINDOW


def _points(app: web.Application, window: str) -> Sequence[Point]:
    source = app[SOURCE]
    if WINDOWS[window] > HISTORY_SPAN:
        return source.day_points()  # a point a minute: the highest load and the lowest limit of each
    return source.history_points()


def _writes(app: web.Application) -> bool:
    return TOKEN in app and bool(app[TOKEN]) and OPERATOR in app


async def page(request: web.Request) -> web.Response:
    window = _window(request)
    source = request.app[SOURCE]
    text = render_page(document(request.app), _points(request.app, window), source.plan_points(), window=window,
                       writes=_writes(request.app))
    return web.Response(text=text, content_type="text/html", headers={"Content-Security-Policy": CSP})


async def script(request: web.Request) -> web.Response:
    return web.Response(text=SCRIPT, content_type="application/javascript",
                        headers={"Cache-Control": "no-cache"})


def _tick_s(app: web.Application) -> float:
    config = getattr(app[SOURCE], "config", None)
    tick = getattr(getattr(config, "control", None), "tick_s", 1.0)
    return min(max(float(tick), 0.5), 5.0)


async def stream(request: web.Request) -> web.StreamResponse:
    """Server-sent events: the page's live part, rendered anew every tick (`event: page`)."""
    window = _window(request)
    app = request.app
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Accel-Buffering": "no"})
    await response.prepare(request)
    source = app[SOURCE]
    try:
        while True:
            status = document(app)
            live = render_live(status, _points(app, window), source.plan_points(), window=window,
                               writes=_writes(app))
            data = json.dumps({"html": live, "health": status["health"]["state"],
                               "title": f"{status['site']['name']}: gateway status"})
            await response.write(f"event: page\ndata: {data}\n\n".encode())
            await asyncio.sleep(_tick_s(app))
    except (ConnectionResetError, asyncio.CancelledError):
        pass
    return response


@web.middleware
async def json_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every error as `{"error": "..."}`: 404, 405 and 413 from aiohttp itself too."""
    try:
        return await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400 or exc.content_type == "application/json":
            raise
        message = {404: f"no such path: {request.path}",
                   405: f"{request.method} is not allowed on {request.path}",
                   413: "the body is too large (writes take a few bytes of JSON)"}.get(exc.status, exc.reason)
        headers = {k: v for k, v in exc.headers.items() if k in ("Allow", "WWW-Authenticate")}
        return web.json_response({"error": message}, status=exc.status, headers=headers)


def make_app(source: StatusSource, *, token: str | None = None, operator: Operator | None = None) -> web.Application:
    """The app; writes work only with both an `operator` and a `token` (403 otherwise)."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[json_errors])  # the writes' bodies are small
    registry = CollectorRegistry(auto_describe=False)
    app[SOURCE] = source
    app[REGISTRY] = registry
    registry.register(_Metrics(app))
    if token:
        app[TOKEN] = token
    if operator is not None:
        app[OPERATOR] = operator
    app.router.add_get("/", page)
    app.router.add_get("/static/page.js", script)
    app.router.add_get("/api/status", api_status)
    app.router.add_get("/api/alarms", api_alarms)
    app.router.add_get("/api/stream", stream)
    app.router.add_get("/api/events", api_events)
    app.router.add_get("/api/log", api_log)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/metrics", metrics)
    app.router.add_post("/api/events/{event_id}/opt", _write(write_opt))
    app.router.add_post("/api/cap", _write(write_cap))
    app.router.add_delete("/api/cap", _write(delete_cap))
    app.router.add_post("/api/evses/{charger_id}/pause", _write(_pause(True)))
    app.router.add_post("/api/evses/{charger_id}/resume", _write(_pause(False)))
    app.router.add_post("/api/evses/{charger_id}/mode", _write(write_mode))
    return app


async def serve(source: StatusSource, host: str, port: int, *, token: str | None = None,
                operator: Operator | None = None) -> tuple[web.AppRunner, int]:
    """Start listening; returns the runner (to clean up) and the port (the OS's pick when port is 0)."""
    runner = web.AppRunner(make_app(source, token=token, operator=operator), access_log=None,
                           shutdown_timeout=1.0)
    await runner.setup()
    site = web.TCPSite(runner, host=host, port=port)
    await site.start()
    server = site._server  # aiohttp has no public way to learn the port the OS picked
    sockets = getattr(server, "sockets", None) or []
    bound = int(sockets[0].getsockname()[1]) if sockets else port
    return runner, bound
