"""The read side: `/api/status`, `/api/alarms`, `/api/events`, `/api/log`, `/healthz`, the page, its script and
its live stream (server-sent events), and the JSON form of every error."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Sequence
from datetime import datetime

from aiohttp import web

from gateway.status.page import (
    DEFAULT_WINDOW,
    SCRIPT,
    WINDOWS,
    Point,
    render_live,
    render_page,
)
from gateway.status.source import CSP, HISTORY_SPAN, OPERATOR, SOURCE, TOKEN, Handler, bad_request, document

log = logging.getLogger("gateway.status")


async def api_status(request: web.Request) -> web.Response:
    return web.json_response(document(request.app))


async def api_alarms(request: web.Request) -> web.Response:
    status = document(request.app)
    return web.json_response({"alarms": status.get("alarms") or [], "health": status["health"]})


async def api_events(request: web.Request) -> web.Response:
    return web.json_response({"events": request.app[SOURCE].events_detail()})


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
        raise bad_request(f"since: {text!r} is neither a sequence number nor an ISO 8601 time with a zone "
                   "(e.g. 2026-01-05T12:00:00+00:00)")
    return 0, at


async def api_log(request: web.Request) -> web.Response:
    seq, at = _since(request.query.get("since"))
    entries = request.app[SOURCE].log_since(seq, at)
    last = entries[-1]["seq"] if entries else seq
    return web.json_response({"entries": entries, "next": last})


async def healthz(request: web.Request) -> web.Response:
    """200 while the site is under control (`ok`, or `degraded` with its reasons), 503 while it is not
    (`failing`): JSON `{"status": ..., "reasons": [{component, id, state, message}]}`."""
    health = document(request.app)["health"]
    code = 503 if health["state"] == "failing" else 200
    return web.json_response({"status": health["state"], "reasons": health["reasons"]}, status=code)


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
