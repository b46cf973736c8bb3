"""The operator's writes: opt out of an event, a temporary site cap, pausing a charger, a charger's mode. Each
needs the `[status] token` as a bearer token (401 without it, 403 while none is configured), answers 400
with one line on a bad body, and is logged with what it changed and who asked."""

from __future__ import annotations

import hmac
import json
import logging
import math
from datetime import UTC, datetime, timedelta
from typing import Annotated, Any, Literal, TypeVar

from aiohttp import web
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, Strict, ValidationError

from gateway.domain import OptState
from gateway.status.events import event_json
from gateway.status.source import OPERATOR, SOURCE, TOKEN, Handler, bad_request
from gateway.wording import number_problem

log = logging.getLogger("gateway.status")

MAX_CAP_MINUTES = 7 * 24 * 60  # a "temporary" cap longer than a week is a config change, not an override


class OptBody(BaseModel):
    model_config = ConfigDict(extra="forbid")

    opt: Literal["optIn", "optOut"] | None  # None: the override is lifted, the rules decide again
    reason: str = Field(default="", max_length=200)


def finite_number(value: object) -> object:
    """JSON from some clients carries NaN and Infinity; neither is a limit anyone can hold a site under."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{value!r} is not a finite number: a cap must be a real figure "
                         "(NaN would compare false with every load, infinity would be no cap at all)")
    return value


# A number written as a number: booleans and quoted numbers are refused, as in the config.
Number = Annotated[float, Strict(), BeforeValidator(finite_number)]


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
        raise bad_request("the body is not JSON") from None
    if not isinstance(data, dict):
        raise bad_request("the body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as error:
        raise bad_request(_problem(error)) from None


def guarded(handler: Handler) -> Handler:
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


def pause_write(paused: bool) -> Handler:
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
    return await _stored_answer(request, {"charger": charger, "mode": body.mode, "session": body.session})
