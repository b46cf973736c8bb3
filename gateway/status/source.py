"""What the status app serves and whom it writes to: the source (the running gateway) and the operator, as
protocols, and the app's keys. The document it serves is the source's, with its health."""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, Protocol

from aiohttp import web
from prometheus_client import CollectorRegistry

from gateway.domain import Event, OptState
from gateway.status.document import health_of
from gateway.status.page import (
    PlanPoint,
    Point,
)

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


def document(app: web.Application) -> dict[str, Any]:
    """The status document with its health (a source that does not give one gets it worked out here)."""
    source = app[SOURCE]
    status = source.status()
    if "health" not in status:
        status["health"] = health_of(status, source.healthy())
    return status


def bad_request(message: str) -> web.HTTPBadRequest:
    return web.HTTPBadRequest(text=json.dumps({"error": message}), content_type="application/json")


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
