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

The app is wired here (`make_app`, `serve`); the read side is `status.api`, the metrics `status.metrics`,
the writes `status.writes`, what it serves and writes to `status.source`, the page `status.page`.

The alarms and the day of history come with the source: the runtime's own watch (`gateway.runtime.watch`)
keeps them, ticked in its control loop, so they hold whether anyone reads this endpoint or not.
"""

from __future__ import annotations

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.status.api import api_alarms, api_events, api_log, api_status, healthz, json_errors, page, script, stream
from gateway.status.metrics import GatewayMetrics, metrics
from gateway.status.page import PlanPoint, Point, chart_svg, render_page
from gateway.status.source import OPERATOR, REGISTRY, SOURCE, TOKEN, Operator, StatusSource
from gateway.status.writes import delete_cap, guarded, pause_write, write_cap, write_mode, write_opt

__all__ = ["PlanPoint", "Point", "chart_svg", "make_app", "render_page", "serve"]

def make_app(source: StatusSource, *, token: str | None = None, operator: Operator | None = None) -> web.Application:
    """The app; writes work only with both an `operator` and a `token` (403 otherwise)."""
    app = web.Application(client_max_size=64 * 1024, middlewares=[json_errors])  # the writes' bodies are small
    registry = CollectorRegistry(auto_describe=False)
    app[SOURCE] = source
    app[REGISTRY] = registry
    registry.register(GatewayMetrics(app))
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
    app.router.add_post("/api/events/{event_id}/opt", guarded(write_opt))
    app.router.add_post("/api/cap", guarded(write_cap))
    app.router.add_delete("/api/cap", guarded(delete_cap))
    app.router.add_post("/api/evses/{charger_id}/pause", guarded(pause_write(True)))
    app.router.add_post("/api/evses/{charger_id}/resume", guarded(pause_write(False)))
    app.router.add_post("/api/evses/{charger_id}/mode", guarded(write_mode))
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
