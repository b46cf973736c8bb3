"""The websocket server chargers dial into: `ws[s]://host:port/ocpp/<charge point id>`.

Everything about a connection that is decided before OCPP starts lives here: the path names a charger in
the config (anything else gets 404 and one log line), HTTP Basic auth with the charger's own password
(security profiles 1 and 2; the user name must be the charge point id), TLS when a certificate is
configured, and the subprotocol (`ocpp1.6` or `ocpp2.0.1`) must be the one the config gives the charger.
An accepted connection is handed to `serve_station`, which runs the OCPP session until it ends.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import logging
import ssl
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gateway.ocpp.settings import CentralSystemSettings, OcppChargerSettings

log = logging.getLogger("gateway.ocpp")
# websockets logs every handshake at INFO; a site log wants our one line per refusal instead
WS_LOG = logging.getLogger("gateway.ocpp.websockets")
if WS_LOG.level == logging.NOTSET:
    WS_LOG.setLevel(logging.WARNING)
PATH_PREFIX = "/ocpp/"
REPEAT_LOG_S = 600.0  # a refused charger retrying is logged once per this, not at every attempt
SUBPROTOCOLS = (Subprotocol("ocpp2.0.1"), Subprotocol("ocpp1.6"))

ServeStation = Callable[[OcppChargerSettings, ServerConnection], Awaitable[None]]


class OcppSetupError(Exception):
    """The server cannot start as configured (TLS files, address in use); the message says what to fix."""


def charger_id_of(path: str) -> str | None:
    path = path.split("?", 1)[0].rstrip("/")
    if not path.startswith(PATH_PREFIX):
        return None
    cid = path[len(PATH_PREFIX):]
    return cid if cid and "/" not in cid else None


def basic_credentials(headers: Headers) -> tuple[str, str] | None:
    value = headers.get("Authorization", "")
    scheme, _, encoded = value.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        user, sep, password = base64.b64decode(encoded.strip(), validate=True).decode("utf-8").partition(":")
    except (binascii.Error, UnicodeDecodeError):
        return None
    return (user, password) if sep else None


class OcppServer:
    def __init__(self, section: CentralSystemSettings, chargers: Sequence[OcppChargerSettings],
                 serve_station: ServeStation) -> None:
        self.section = section
        self.chargers: Mapping[str, OcppChargerSettings] = {c.id: c for c in chargers}
        self._serve_station = serve_station
        self._server: Server | None = None
        self._refusals: dict[str, float] = {}

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def scheme(self) -> str:
        return "wss" if self.section.tls_cert else "ws"

    def url_of(self, charger_id: str) -> str:
        return f"{self.scheme}://{self.section.bind}:{self.port}{PATH_PREFIX}{charger_id}"

    def _tls(self) -> ssl.SSLContext | None:
        if not self.section.tls_cert or not self.section.tls_key:
            return None
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            context.load_cert_chain(self.section.tls_cert, self.section.tls_key)
        except (OSError, ssl.SSLError) as exc:
            raise OcppSetupError(f"ocpp.tls_cert/tls_key: cannot load {self.section.tls_cert}: {exc}") from None
        return context

    async def start(self) -> None:
        try:
            self._server = await serve(
                self._handle,
                self.section.bind,
                self.section.port,
                ssl=self._tls(),
                subprotocols=list(SUBPROTOCOLS),
                select_subprotocol=self._select_subprotocol,
                process_request=self._check_request,
                max_size=self.section.max_message_bytes,
                open_timeout=10,
                ping_interval=30,
                ping_timeout=30,
                close_timeout=5,
                compression=None,  # chargers rarely negotiate it; it costs CPU per frame at scale
                logger=WS_LOG,
            )
        except OSError as exc:
            where = f"{self.section.bind}:{self.section.port}"
            raise OcppSetupError(f"ocpp: cannot listen on {where}: {exc.strerror}") from None
        log.info("ocpp central system listening url=%s://%s:%d%s<id>", self.scheme, self.section.bind, self.port,
                 PATH_PREFIX)

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    def _warn_once(self, key: str, message: str, *args: object) -> None:
        """One WARNING per refused charger and reason every REPEAT_LOG_S; retries in between at DEBUG."""
        now = time.monotonic()
        last = self._refusals.get(key)
        if last is not None and now - last < REPEAT_LOG_S:
            log.debug(message, *args)
            return
        if len(self._refusals) > 1000:  # a scan of random ids must not grow this without bound
            self._refusals.clear()
        self._refusals[key] = now
        log.warning(message + " (repeats within %.0f s are not logged)", *args, REPEAT_LOG_S)

    def _refuse(self, connection: ServerConnection, status: HTTPStatus, why: str) -> Response:
        response = connection.respond(status, why + "\n")
        if status == HTTPStatus.UNAUTHORIZED:
            response.headers["WWW-Authenticate"] = 'Basic realm="ocpp", charset="UTF-8"'
        return response

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        peer = connection.remote_address[0] if connection.remote_address else "?"
        cid = charger_id_of(request.path)
        if cid is None:
            self._warn_once(f"path:{peer}", "ocpp refused path=%r peer=%s: expected %s<id>", request.path[:80], peer,
                            PATH_PREFIX)
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown path")
        charger = self.chargers.get(cid)
        if charger is None:
            self._warn_once(f"unknown:{cid[:64]}", "ocpp refused unknown charge point id=%r peer=%s "
                            "(not in the config)", cid[:64], peer)
            return self._refuse(connection, HTTPStatus.NOT_FOUND, "unknown charge point")
        expected = charger.ocpp.password
        if expected is None:
            if self.section.require_password:
                self._warn_once(f"nopass:{cid}", "ocpp refused charger=%s: no password configured and "
                                "ocpp.require_password is on", cid)
                return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "no password configured")
            return None
        given = basic_credentials(request.headers)
        if given is None:
            self._warn_once(f"nocred:{cid}", "ocpp refused charger=%s peer=%s: no HTTP Basic credentials", cid, peer)
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "credentials required")
        user_ok = hmac.compare_digest(given[0].encode(), cid.encode())
        password_ok = hmac.compare_digest(given[1].encode(), expected.encode())
        if not (user_ok and password_ok):
            what = "password" if user_ok else "user name"
            self._warn_once(f"wrong:{cid}", "ocpp refused charger=%s peer=%s: wrong %s", cid, peer, what)
            return self._refuse(connection, HTTPStatus.UNAUTHORIZED, "wrong credentials")
        return None

    def _select_subprotocol(self, connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
        cid = charger_id_of(connection.request.path) if connection.request else None
        charger = self.chargers.get(cid or "")
        if charger is None:
            return None
        wanted = Subprotocol(charger.protocol)
        return wanted if wanted in offered else None

    async def _handle(self, ws: ServerConnection) -> None:
        cid = charger_id_of(ws.request.path) if ws.request else None
        charger = self.chargers.get(cid or "")
        if charger is None:  # process_request already refused it; defensive
            await ws.close(1008, "unknown charge point")
            return
        if ws.subprotocol is None:
            offered = ws.request.headers.get("Sec-WebSocket-Protocol", "none") if ws.request else "none"
            self._warn_once(f"proto:{cid}", "ocpp refused charger=%s: offered subprotocols %s, config says %s",
                            cid, offered, charger.protocol)
            await ws.close(1002, f"expected subprotocol {charger.protocol}")
            return
        await self._serve_station(charger, ws)
