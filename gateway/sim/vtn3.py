"""A simulated OpenADR 3 VTN (3.0.1 or 3.1.0) for the tests and the demo: aiohttp, everything in memory.

It follows the OpenAPI file of its version (gateway/openadr3/spec): OAuth2 client credentials at
/auth/token (and /auth/server on 3.1.0), bearer tokens that expire, programs, events, VENs, resources,
subscriptions with webhook notifications (the subscriber's bearer token on each), reports. Every request
body a client sends, and every object it answers with, is validated against the version's component
schemas; a body that fails is answered 400 and its error kept in `schema_errors`, so a test can assert the
VEN never sent one. Programs and events are written by the business logic (BL): over HTTP with the BL's
client credentials, or in process (`create_program`, `create_event`, `update_event`, `delete_event`).
Faults for the tests: `fail_status` (every VEN request answered with it), `hang` (no answer at all),
`bad_events` (GET /events answers a list that fails the schema), `stop()` and `start()` on the same port.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import itertools
import logging
import secrets
import ssl
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from importlib.resources import files
from typing import Any

import aiohttp
import jsonschema
import yaml
from aiohttp import web

log = logging.getLogger("gateway.sim.vtn3")

VERSIONS = ("3.0.1", "3.1.0")
# The request body schema of each write, per version (the OpenAPI file's requestBody references).
REQUEST_SCHEMAS = {
    "3.0.1": {"vens": "ven", "resources": "resource", "subscriptions": "subscription", "reports": "report",
              "programs": "program", "events": "event"},
    "3.1.0": {"vens": "venRequest", "resources": "resourceRequest", "subscriptions": "subscriptionRequest",
              "reports": "reportRequest", "programs": "programRequest", "events": "eventRequest"},
}
OBJECT_TYPES = {"programs": "PROGRAM", "events": "EVENT", "vens": "VEN", "resources": "RESOURCE",
                "subscriptions": "SUBSCRIPTION", "reports": "REPORT"}


def load_spec(version: str) -> dict[str, Any]:
    text = (files("gateway.openadr3") / "spec" / version / "openadr3.yaml").read_text(encoding="utf-8")
    spec: dict[str, Any] = yaml.safe_load(text)
    return spec


class Schemas:
    """The component schemas of one version's OpenAPI file, as JSON Schema (draft 4, which OpenAPI 3.0's
    schema objects follow; `nullable` and `discriminator` are OpenAPI's own and not checked)."""

    def __init__(self, version: str) -> None:
        self.version = version
        self.spec = load_spec(version)

    def errors(self, component: str, body: Any) -> list[str]:
        schema = {**self.spec, "$ref": f"#/components/schemas/{component}"}
        validator = jsonschema.Draft4Validator(schema)
        return [f"{component}: {'/'.join(str(p) for p in e.absolute_path) or 'body'}: {e.message}"[:300]
                for e in validator.iter_errors(body)]


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass
class Client:
    client_id: str
    secret: str
    role: str  # "ven" or "bl"


@dataclass
class Received:
    method: str
    path: str
    body: Any
    at: float = field(default_factory=time.monotonic)


class SimVtn3:
    def __init__(self, *, version: str = "3.1.0", port: int = 0, token_lifetime_s: int = 3600,
                 ven_client: tuple[str, str] = ("ven-client", "ven-secret"),
                 bl_client: tuple[str, str] = ("bl-client", "bl-secret"), notify: bool = True,
                 cert: str | None = None, key: str | None = None) -> None:
        if version not in VERSIONS:
            raise ValueError(f"version {version!r} is not one of {', '.join(VERSIONS)}")
        self.version = version
        self.port = port
        self.token_lifetime_s = token_lifetime_s
        self.notify = notify  # False: accept subscriptions but never call back (polling only)
        self.tls = (cert, key) if cert and key else None  # HTTPS with this server certificate
        self.schemas = Schemas(version)
        self.clients = {c[0]: Client(c[0], c[1], role) for c, role in ((ven_client, "ven"), (bl_client, "bl"))}
        self.tokens: dict[str, tuple[Client, float]] = {}  # token → client, expiry (monotonic)
        self.objects: dict[str, dict[str, dict[str, Any]]] = {k: {} for k in OBJECT_TYPES}
        self.received: list[Received] = []  # every request a VEN client made, in order
        self.schema_errors: list[str] = []  # request bodies (any client) and answers that failed the schema
        self.notifications: list[tuple[str, int]] = []  # (callback URL, HTTP status) of each notification sent
        self.tokens_issued = 0
        self.fail_status: int | None = None
        self.hang = False
        self.bad_events = False
        self._ids = itertools.count(1)
        self._runner: web.AppRunner | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.port}/openadr3/{self.version}"

    def app(self) -> web.Application:
        app = web.Application()
        base = f"/openadr3/{self.version}"
        app.router.add_get(base + "/auth/server", self._auth_server)
        app.router.add_post(base + "/auth/token", self._token)
        for kind in OBJECT_TYPES:
            app.router.add_get(f"{base}/{kind}", self._list(kind))
            app.router.add_post(f"{base}/{kind}", self._create(kind))
            app.router.add_get(f"{base}/{kind}/{{id}}", self._read(kind))
            app.router.add_put(f"{base}/{kind}/{{id}}", self._update(kind))
            app.router.add_delete(f"{base}/{kind}/{{id}}", self._delete(kind))
        # 3.0.1 keeps a VEN's resources under it.
        app.router.add_get(base + "/vens/{ven}/resources", self._list("resources"))
        app.router.add_post(base + "/vens/{ven}/resources", self._create("resources"))
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        context = None
        if self.tls is not None:
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(*self.tls)
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, ssl_context=context)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = int(sockets[0].getsockname()[1])
        log.info("sim vtn3 (OpenADR %s) listening url=%s", self.version, self.url)

    async def stop(self) -> None:
        """Stop answering (the port is kept for `start()`); what it holds stays."""
        for task in list(self._tasks):
            task.cancel()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------------------------ auth

    async def _auth_server(self, request: web.Request) -> web.Response:
        if self.version == "3.0.1":
            return self._problem(404, "Not Found", "/auth/server is a 3.1.0 endpoint")
        return web.json_response({"tokenURL": f"{self.url}/auth/token"})

    async def _token(self, request: web.Request) -> web.Response:
        form = dict(await request.post())
        errors = self.schemas.errors("clientCredentialRequest", {k: str(v) for k, v in form.items()})
        if errors:
            self.schema_errors.extend(errors)
            return web.json_response({"error": "invalid_request", "error_description": errors[0]}, status=400)
        client = self.clients.get(str(form.get("client_id")))
        if client is None or not secrets.compare_digest(client.secret, str(form.get("client_secret"))):
            return web.json_response({"error": "invalid_client"}, status=401)
        token = secrets.token_urlsafe(24)
        self.tokens[token] = (client, time.monotonic() + self.token_lifetime_s)
        self.tokens_issued += 1
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.token_lifetime_s})

    def expire_tokens(self) -> None:
        """Every token issued so far stops working now (as if their lifetime had passed)."""
        self.tokens.clear()

    def _client(self, request: web.Request) -> Client | None:
        scheme, _, token = request.headers.get("Authorization", "").partition(" ")
        held = self.tokens.get(token) if scheme == "Bearer" else None
        if held is None or held[1] < time.monotonic():
            return None
        return held[0]

    @staticmethod
    def _problem(status: int, title: str, detail: str = "") -> web.Response:
        return web.json_response({"type": "about:blank", "title": title, "status": status, "detail": detail},
                                 status=status)

    async def _gate(self, request: web.Request, write_role: str | None = None) -> Client | web.Response:
        client = self._client(request)
        if client is not None and client.role == "ven":
            if self.hang:
                await asyncio.sleep(3600)
            if self.fail_status is not None:
                return self._problem(self.fail_status, "Injected fault")
        if client is None:
            return self._problem(401, "Unauthorized", "no valid bearer token")
        if write_role is not None and client.role != write_role and client.role != "bl":
            return self._problem(403, "Forbidden", f"only {write_role} clients write these")
        return client

    def _answer(self, kind: str, body: Any, status: int = 200) -> web.Response:
        items = body if isinstance(body, list) else [body]
        if self.version == "3.1.0" and kind in ("vens", "resources"):
            # 3.1.0's `ven` and `resource` are allOf objectMetadata (objectType VEN/RESOURCE) and the BL request
            # (objectType BL_VEN_REQUEST/BL_RESOURCE_REQUEST): no object can satisfy both, so these go unchecked.
            return web.json_response(body, status=status)
        schema = {"programs": "program", "events": "event", "vens": "ven", "resources": "resource",
                  "subscriptions": "subscription", "reports": "report"}[kind]
        for item in items:
            self.schema_errors.extend(f"answer {e}" for e in self.schemas.errors(schema, item))
        return web.json_response(body, status=status)

    # ------------------------------------------------------------------------------------ objects

    def _visible(self, kind: str, client: Client) -> list[dict[str, Any]]:
        items = list(self.objects[kind].values())
        if client.role == "ven" and kind in ("vens", "resources", "subscriptions", "reports"):
            items = [o for o in items if o.get("clientID", client.client_id) == client.client_id]
        return items

    def _list(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            gate = await self._gate(request)
            if isinstance(gate, web.Response):
                return gate
            self.received.append(Received("GET", request.path, dict(request.query))) if gate.role == "ven" else None
            if kind == "events" and self.bad_events and gate.role == "ven":
                return web.json_response([{"id": "bad event!", "programID": 7, "intervals": "none"}])
            items = self._visible(kind, gate)
            q = request.query
            for key, field_name in (("programID", "programID"), ("venName", "venName"), ("venID", "venID"),
                                    ("resourceName", "resourceName")):
                if key in q:
                    items = [o for o in items if o.get(field_name) == q[key]]
            if "ven" in request.match_info:
                items = [o for o in items if o.get("venID") == request.match_info["ven"]]
            try:
                skip, limit = int(q.get("skip", 0)), min(int(q.get("limit", 50)), 50)
            except ValueError:
                return self._problem(400, "Bad Request", "skip and limit are integers")
            return self._answer(kind, [self._public(kind, o) for o in items[skip:skip + limit]])
        return handle

    def _public(self, kind: str, obj: dict[str, Any]) -> dict[str, Any]:
        out = {k: v for k, v in obj.items() if v is not None}
        if self.version == "3.0.1":
            out.pop("clientID", None)
        return out

    async def _write(self, request: web.Request, kind: str) -> tuple[Client, Any] | web.Response:
        """A write's client and its body, checked against the version's request schema; or the refusal."""
        gate = await self._gate(request, "bl" if kind in ("programs", "events") else None)
        if isinstance(gate, web.Response):
            return gate
        try:
            body = await request.json()
        except ValueError:
            return self._problem(400, "Bad Request", "body is not JSON")
        if gate.role == "ven":
            self.received.append(Received(request.method, request.path, body))
        errors = self.schemas.errors(REQUEST_SCHEMAS[self.version][kind], body)
        if errors:
            self.schema_errors.extend(errors)
            return self._problem(400, "Bad Request", errors[0])
        return gate, body

    def _create(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            checked = await self._write(request, kind)
            if isinstance(checked, web.Response):
                return checked
            gate, body = checked
            if kind == "vens" and any(v.get("venName") == body.get("venName") for v in self.objects["vens"].values()):
                return self._problem(409, "Conflict", "venName is taken")
            obj = self.store(kind, body, client_id=gate.client_id)
            return self._answer(kind, self._public(kind, obj), 201)
        return handle

    def _read(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            gate = await self._gate(request)
            if isinstance(gate, web.Response):
                return gate
            obj = self.objects[kind].get(request.match_info["id"])
            if obj is None:
                return self._problem(404, "Not Found")
            return self._answer(kind, self._public(kind, obj))
        return handle

    def _update(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            checked = await self._write(request, kind)
            if isinstance(checked, web.Response):
                return checked
            _, body = checked
            if request.match_info["id"] not in self.objects[kind]:
                return self._problem(404, "Not Found")
            obj = self.replace(kind, request.match_info["id"], body)
            return self._answer(kind, self._public(kind, obj))
        return handle

    def _delete(self, kind: str) -> Any:
        async def handle(request: web.Request) -> web.Response:
            gate = await self._gate(request, "bl" if kind in ("programs", "events") else None)
            if isinstance(gate, web.Response):
                return gate
            obj = self.remove(kind, request.match_info["id"])
            if obj is None:
                return self._problem(404, "Not Found")
            return self._answer(kind, self._public(kind, obj))
        return handle

    # ------------------------------------------------------------------------------------ the BL, in process

    def store(self, kind: str, body: dict[str, Any], *, client_id: str = "bl-client") -> dict[str, Any]:
        now = _now()
        obj = {**copy.deepcopy(body), "id": f"{kind[:-1]}-{next(self._ids)}", "createdDateTime": now,
               "modificationDateTime": now, "objectType": OBJECT_TYPES[kind]}
        if self.version == "3.1.0" and kind in ("vens", "resources", "subscriptions", "reports"):
            obj["clientID"] = client_id
            if kind in ("vens", "resources"):
                obj["objectType"] = OBJECT_TYPES[kind]
        if kind == "resources" and "venID" not in obj:
            obj["venID"] = ""
        self.objects[kind][obj["id"]] = obj
        self._notify(kind, "CREATE", obj)
        return obj

    def replace(self, kind: str, object_id: str, body: dict[str, Any]) -> dict[str, Any]:
        old = self.objects[kind][object_id]
        kept: dict[str, Any] = {k: old[k] for k in ("id", "createdDateTime", "objectType") if k in old}
        obj = {**kept,
               **{k: v for k, v in copy.deepcopy(body).items() if k not in ("id", "createdDateTime", "objectType")},
               "modificationDateTime": _now()}
        if "clientID" in old:
            obj["clientID"] = old["clientID"]
        self.objects[kind][object_id] = obj
        self._notify(kind, "UPDATE", obj)
        return obj

    def remove(self, kind: str, object_id: str) -> dict[str, Any] | None:
        obj = self.objects[kind].pop(object_id, None)
        if obj is not None:
            self._notify(kind, "DELETE", obj)
        return obj

    def create_program(self, name: str, **fields: Any) -> dict[str, Any]:
        return self.store("programs", {"programName": name, **fields})

    def create_event(self, program_id: str, intervals: list[dict[str, Any]], **fields: Any) -> dict[str, Any]:
        body = {"programID": program_id, "intervals": intervals, **fields}
        errors = self.schemas.errors(REQUEST_SCHEMAS[self.version]["events"], body)
        if errors:
            raise ValueError(errors[0])
        return self.store("events", body)

    def update_event(self, event_id: str, **fields: Any) -> dict[str, Any]:
        old = self.objects["events"][event_id]
        body = {k: v for k, v in old.items() if k not in ("id", "createdDateTime", "modificationDateTime",
                                                          "objectType")}
        return self.replace("events", event_id, {**body, **fields})

    def delete_event(self, event_id: str) -> dict[str, Any] | None:
        return self.remove("events", event_id)

    def reports(self) -> list[dict[str, Any]]:
        return list(self.objects["reports"].values())

    # ------------------------------------------------------------------------------------ notifications

    def _notify(self, kind: str, operation: str, obj: dict[str, Any]) -> None:
        if not self.notify or kind not in ("programs", "events"):
            return
        old_names = {"CREATE": "POST", "UPDATE": "PUT", "DELETE": "DELETE"}  # 3.0.1's operations
        op = operation if self.version == "3.1.0" else old_names[operation]
        for sub in list(self.objects["subscriptions"].values()):
            if sub.get("programID") and kind == "events" and sub["programID"] != obj.get("programID"):
                continue
            for oo in sub.get("objectOperations", []):
                if OBJECT_TYPES[kind] in oo.get("objects", []) and operation in oo.get("operations", []):
                    note = {"objectType": OBJECT_TYPES[kind], "operation": op, "object": self._public(kind, obj)}
                    task = asyncio.get_running_loop().create_task(
                        self._post(oo["callbackUrl"], oo.get("bearerToken"), note))
                    self._tasks.add(task)
                    task.add_done_callback(self._tasks.discard)

    async def _post(self, url: str, token: str | None, note: dict[str, Any]) -> None:
        self.schema_errors.extend(f"notification {e}" for e in self.schemas.errors("notification", note))
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        try:
            async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session, \
                    session.post(url, json=note, headers=headers) as response:
                self.notifications.append((url, response.status))
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.info("sim vtn3: notification to %s failed: %s", url, exc)
            self.notifications.append((url, 0))


def interval(n: int, payload_type: str, value: Any, *, start: datetime | None = None,
             duration: timedelta | None = None) -> dict[str, Any]:
    """One event interval with one payload (for the BL's events)."""
    out: dict[str, Any] = {"id": n, "payloads": [{"type": payload_type, "values": [value]}]}
    period: dict[str, Any] = {}
    if start is not None:
        period["start"] = start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if duration is not None:
        period["duration"] = f"PT{int(duration.total_seconds())}S"
    if period:
        out["intervalPeriod"] = period
    return out


def period(start: datetime, duration: timedelta, randomize: timedelta | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"start": start.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                           "duration": f"PT{int(duration.total_seconds())}S"}
    if randomize is not None:
        out["randomizeStart"] = f"PT{int(randomize.total_seconds())}S"
    return out


def config_block(vtn: SimVtn3, ven_name: str = "demo-ven") -> str:
    """The `[vtn]` and `[vtn.oadr3]` sections of a gateway that speaks OpenADR 3 to this VTN."""
    token_url = [f'token_url = "{vtn.url}/auth/token"'] if vtn.version == "3.0.1" else []
    return "\n".join([
        "[vtn]", f'url = "{vtn.url}"', f'ven_name = "{ven_name}"', "allow_plain_http = true", "poll_s = 1",
        'protocol = "3"', "",
        "[vtn.oadr3]", f'version = "{vtn.version}"', 'client_id = "ven-client"', 'client_secret = "ven-secret"',
        *token_url, "", ""])


async def demo_events(vtn: SimVtn3, *, speed: float, curtail_after_s: float, level: int = 2,
                      minutes: float = 10.0) -> None:
    """The demo's story over OpenADR 3: once a VEN has enrolled, a program with a price for the next hour
    and, `curtail_after_s` simulated seconds later, a SIMPLE curtailment reported on (DEMAND, OPERATING_STATE)."""
    while not vtn.objects["resources"]:
        await asyncio.sleep(0.2)
    program = vtn.create_program("demo-program")
    now = datetime.now(UTC)
    quarter = timedelta(seconds=max(60.0, round(900.0 / speed)))
    vtn.create_event(program["id"], [interval(n, "PRICE", p) for n, p in enumerate((0.32, 0.28, 0.12, 0.10))],
                     eventName="demo-price", intervalPeriod=period(now, quarter),
                     payloadDescriptors=[{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "PRICE",
                                          "units": "KWH", "currency": "USD"}])
    start = now + timedelta(seconds=curtail_after_s / speed)
    length = timedelta(seconds=max(60.0, round(minutes * 60.0 / speed)))
    vtn.create_event(program["id"], [interval(0, "SIMPLE", level)], eventName="demo-curtail",
                     intervalPeriod=period(start, length),
                     reportDescriptors=[{"payloadType": "DEMAND"}, {"payloadType": "OPERATING_STATE"}])
    log.info("demo: OpenADR 3 price event and curtailment (level %d from %s) created", level, start.isoformat())


async def _main() -> None:
    parser = argparse.ArgumentParser(description="A simulated OpenADR 3 VTN on 127.0.0.1 (in memory).")
    parser.add_argument("--version", choices=VERSIONS, default="3.1.0")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args()
    vtn = SimVtn3(version=args.version, port=args.port)
    await vtn.start()
    print(f"sim vtn3 url={vtn.url} ven client=ven-client/ven-secret bl client=bl-client/bl-secret", flush=True)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.Event().wait()


if __name__ == "__main__":  # pragma: no cover
    logging.basicConfig(level=logging.INFO)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main())
