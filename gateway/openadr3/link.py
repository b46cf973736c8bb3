"""The HTTP link to an OpenADR 3 VTN: OAuth2 client credentials, bearer tokens, JSON in and out, TLS.

The token comes from the configured token URL, or on 3.1.0 from the one `GET /auth/server` names; it is
kept and fetched again before it expires (at 80 % of its lifetime) and at once when the VTN answers 401.
Every request is bounded by the request timeout and the answer by `max_body_bytes`. Failures are sorted
the way the VEN's backoff needs them: `VtnUnreachable` (connection, TLS, timeout, 5xx: the VTN may come
back) and `VtnRefused` (4xx, an answer that is not JSON or fails the schema: this VTN said no). Each
carries one line saying what happened, never the secret or the token.
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import urljoin

import aiohttp
from pydantic import BaseModel, ValidationError

from gateway.openadr3 import models
from gateway.openadr3.settings import Oadr3Settings

M = TypeVar("M", bound=BaseModel)
REFRESH_AT = 0.8  # of a token's lifetime
DEFAULT_LIFETIME_S = 3600.0  # a token answered without expires_in


class VtnUnreachable(Exception):
    """No answer, or one that says the VTN cannot answer now (5xx)."""


class VtnRefused(Exception):
    """An answer that says no (4xx) or that the VEN refuses (not JSON, fails the schema)."""

    def __init__(self, text: str, status: int | None = None) -> None:
        super().__init__(text)
        self.status = status


@dataclass(slots=True)
class _Token:
    value: str
    refresh_at: float  # monotonic


def schema_error(exc: ValidationError) -> str:
    first = exc.errors()[0]
    where = ".".join(str(p) for p in first.get("loc", ()))
    return f"{where or 'body'}: {first.get('msg', 'invalid')}"


class VtnLink:
    def __init__(self, settings: Oadr3Settings, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.monotonic = monotonic
        self._session: aiohttp.ClientSession | None = None
        self._token: _Token | None = None
        self._token_url: str | None = settings.token_url
        self._token_lock = asyncio.Lock()
        self.tokens_fetched = 0

    def _ssl(self) -> ssl.SSLContext | bool:
        if self.settings.url.startswith("http://"):
            return False
        context = ssl.create_default_context(cafile=self.settings.ca_file)
        context.check_hostname = self.settings.check_hostname
        return context

    def session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(total=self.settings.request_timeout_s)
            self._session = aiohttp.ClientSession(timeout=timeout,
                                                  connector=aiohttp.TCPConnector(ssl=self._ssl()))
        return self._session

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def url(self, path: str) -> str:
        return f"{self.settings.url}/{path.lstrip('/')}"

    # --------------------------------------------------------------------------------------- tokens

    async def token(self) -> str:
        async with self._token_lock:
            if self._token is None or self.monotonic() >= self._token.refresh_at:
                self._token = await self._fetch_token()
            return self._token.value

    def forget_token(self) -> None:
        self._token = None

    async def _fetch_token(self) -> _Token:
        if self._token_url is None:
            info = await self._plain("GET", self.url("auth/server"), models.AuthServer, "GET /auth/server")
            self._token_url = urljoin(self.settings.url + "/", info.token_url)
        form = {"grant_type": "client_credentials", "client_id": self.settings.client_id,
                "client_secret": self.settings.client_secret}
        if self.settings.scope:
            form["scope"] = self.settings.scope
        token = await self._plain("POST", self._token_url, models.Token, "token request", data=form)
        if token.token_type.lower() != "bearer":
            raise VtnRefused(f"token request: token_type {token.token_type!r} is not Bearer")
        lifetime = float(token.expires_in) if token.expires_in and token.expires_in > 0 else DEFAULT_LIFETIME_S
        self.tokens_fetched += 1
        return _Token(token.access_token, self.monotonic() + lifetime * REFRESH_AT)

    async def _plain(self, method: str, url: str, model: type[M], what: str, **kwargs: Any) -> M:
        status, body = await self._send(method, url, what, {}, **kwargs)
        if status >= 400:
            raise VtnRefused(f"{what}: HTTP {status}{_problem(body)}", status)
        return _validate(model, body, what)

    # --------------------------------------------------------------------------------------- requests

    async def _send(self, method: str, url: str, what: str, headers: dict[str, str],
                    **kwargs: Any) -> tuple[int, Any]:
        try:
            async with self.session().request(method, url, headers=headers, **kwargs) as response:
                raw = await response.content.read(self.settings.max_body_bytes + 1)
                status = response.status
        except TimeoutError:
            raise VtnUnreachable(f"{what}: no answer within {self.settings.request_timeout_s:g} s") from None
        except aiohttp.ClientError as exc:
            raise VtnUnreachable(f"{what}: {type(exc).__name__}: {str(exc) or 'connection failed'}"[:300]) from None
        if status >= 500:
            raise VtnUnreachable(f"{what}: HTTP {status}")
        if len(raw) > self.settings.max_body_bytes:
            raise VtnRefused(f"{what}: answer larger than {self.settings.max_body_bytes} bytes", status)
        if not raw.strip():
            return status, None
        try:
            return status, json.loads(raw)
        except ValueError:
            raise VtnRefused(f"{what}: HTTP {status} answer is not JSON", status) from None

    async def call(self, method: str, path: str, body: Any = None, *, params: dict[str, str] | None = None,
                   ok: tuple[int, ...] = (200, 201, 204)) -> tuple[int, Any]:
        """One authorised request; a 401 fetches a new token and tries once more."""
        what = f"{method} /{path.lstrip('/')}"
        for attempt in (1, 2):
            headers = {"Authorization": f"Bearer {await self.token()}"}
            kwargs: dict[str, Any] = {"params": params} if params else {}
            if body is not None:
                kwargs["json"] = body
            status, answer = await self._send(method, self.url(path), what, headers, **kwargs)
            if status == 401 and attempt == 1:
                self.forget_token()
                continue
            if status not in ok:
                raise VtnRefused(f"{what}: HTTP {status}{_problem(answer)}", status)
            return status, answer
        raise AssertionError("unreachable")  # pragma: no cover

    async def get_list(self, path: str, model: type[M], params: dict[str, str] | None = None) -> list[M]:
        _, answer = await self.call("GET", path, params=params)
        if not isinstance(answer, list):
            raise VtnRefused(f"GET /{path}: answer is not a list")
        return [_validate(model, item, f"GET /{path}[{n}]") for n, item in enumerate(answer)]

    async def send(self, method: str, path: str, body: Any, model: type[M]) -> M:
        _, answer = await self.call(method, path, body)
        return _validate(model, answer, f"{method} /{path}")


def _validate(model: type[M], body: Any, what: str) -> M:
    try:
        return model.model_validate(body)
    except ValidationError as exc:
        raise VtnRefused(f"{what}: answer fails the schema ({schema_error(exc)})") from None


def _problem(body: Any) -> str:
    if isinstance(body, dict):
        text = body.get("detail") or body.get("title") or body.get("error_description") or body.get("error")
        if text:
            return f" ({str(text)[:200]})"
    return ""
