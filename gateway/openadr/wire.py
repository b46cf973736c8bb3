"""One HTTP(S) exchange with the VTN: build the message with openleadr, POST it, guard and parse the answer.

TLS: with a client certificate the context verifies the VTN against `ca_file` and presents our
certificate (mTLS); the VTN's certificate may additionally be pinned by openleadr fingerprint, checked on
the live connection before any byte of the answer is trusted. Plain HTTP only when the config allows it.
Every exchange is bounded by one total timeout and a byte limit on the answer.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiohttp
from lxml import etree
from openleadr import utils as oadr_utils
from openleadr.messaging import create_message, parse_message, validate_xml_schema, validate_xml_signature

from gateway.openadr.settings import VtnSettings
from gateway.openadr.xmlguard import RefusedPayload, check_raw, normalize_tree

log = logging.getLogger("gateway.openadr")

SIGNATURE_NS = "http://www.w3.org/2000/09/xmldsig#"
OADR_NS = "http://openadr.org/oadr-2.0b/2012/07"
Edit = Callable[[Any], None]  # changes an oadrSignedObject (an lxml element) in place


class VtnUnreachable(Exception):
    """Transport trouble (connect, TLS, timeout, HTTP status): retried with backoff."""


class VtnConfigError(Exception):
    """Our own certificate, key or CA cannot be used: a user error, one line, no point retrying."""


def fingerprint_of_der(der: bytes) -> str:
    return str(oadr_utils.certificate_fingerprint_from_der(der))


def client_ssl_context(vtn: VtnSettings) -> ssl.SSLContext | None:
    if vtn.plain_http:
        return None
    ctx = ssl.create_default_context(cafile=vtn.ca_file)
    ctx.check_hostname = vtn.check_hostname
    if vtn.tls12_only:
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.maximum_version = ssl.TLSVersion.TLSv1_2
        ctx.set_ciphers("ECDHE-ECDSA-AES128-SHA256:AES128-SHA256")
    if vtn.cert and vtn.key:
        ctx.load_cert_chain(vtn.cert, vtn.key)
    if vtn.vtn_fingerprint:
        ctx.sslobject_class = pinned_sslobject(vtn.vtn_fingerprint)
    return ctx


def pinned_sslobject(expected: str) -> type[ssl.SSLObject]:
    """An SSLObject that fails the handshake unless the VTN's certificate has the pinned fingerprint.

    Checked inside the handshake (asyncio drives TLS through `SSLContext.sslobject_class`), so not one
    byte goes out on a connection to the wrong peer, and nothing depends on aiohttp internals.
    """

    class PinnedSSLObject(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until the handshake is complete
            der = self.getpeercert(binary_form=True)
            seen = fingerprint_of_der(der) if der else "none"
            if seen != expected:
                raise ssl.SSLCertVerificationError(
                    f"VTN certificate fingerprint {seen} is not the pinned {expected}"
                )

    return PinnedSSLObject


class VtnLink:
    """Owns the aiohttp session to one VTN. `exchange` returns (message type, openleadr payload dict)."""

    def __init__(self, vtn: VtnSettings) -> None:
        self.vtn = vtn
        self._session: aiohttp.ClientSession | None = None
        self._sign_cert: bytes | None = None
        self._sign_key: bytes | None = None
        try:
            # Built now so a wrong path or a key that does not match its certificate is reported at start.
            self._ssl = client_ssl_context(vtn)
            if vtn.sign_messages and vtn.cert and vtn.key:
                self._sign_cert = Path(vtn.cert).read_bytes()
                self._sign_key = Path(vtn.key).read_bytes()
        except (OSError, ssl.SSLError, ValueError) as exc:
            files = ", ".join(f"{k}={v}" for k, v in (("cert", vtn.cert), ("key", vtn.key), ("ca_file", vtn.ca_file))
                              if v)
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise VtnConfigError(f"vtn: cannot load TLS files ({files}): {reason}") from None

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _ensure_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            connector = aiohttp.TCPConnector(ssl=self._ssl or False, limit=2)
            self._session = aiohttp.ClientSession(
                connector=connector,
                headers={"Content-Type": "application/xml"},
                timeout=aiohttp.ClientTimeout(total=self.vtn.request_timeout_s),
            )
        return self._session

    def build(self, message_type: str, edit: Edit | None = None, **payload: Any) -> bytes:
        """The message as openleadr's templates write it; `edit` changes its oadrSignedObject in place first
        (for what the templates cannot write, e.g. oadrPayloadResourceStatus), before it is signed."""
        if edit is None:
            text = create_message(
                message_type,
                cert=self._sign_cert,
                key=self._sign_key,
                disable_signature=self._sign_cert is None,
                **payload,
            )
        else:
            text = self._edited(message_type, edit, payload)
        body = text.encode("utf-8") if isinstance(text, str) else bytes(text)
        # openleadr's templates do not escape: an id echoed from the VTN with "<" or "&" in it would make
        # our answer malformed (or inject elements). Refuse to send anything that is not well-formed.
        try:
            check_raw(body, 50_000_000)
        except RefusedPayload as exc:
            raise RefusedPayload(f"our {message_type} would not be well-formed XML (unsafe characters "
                                 f"echoed from the VTN?): {exc}") from None
        return body

    def _edited(self, message_type: str, edit: Edit, payload: dict[str, Any]) -> str:
        unsigned = create_message(message_type, disable_signature=True, **payload)
        try:
            root = etree.fromstring(unsigned.encode("utf-8") if isinstance(unsigned, str) else unsigned)
        except etree.XMLSyntaxError as exc:
            raise RefusedPayload(f"our {message_type} would not be well-formed XML (unsafe characters echoed from "
                                 f"the VTN?): {exc}") from None
        signed = root.find(f"{{{OADR_NS}}}oadrSignedObject")
        if signed is None:
            raise RefusedPayload(f"our {message_type} has no oadrSignedObject")
        edit(signed)
        signed_text = etree.tostring(signed).decode("utf-8")
        signature = ""
        if self._sign_cert is not None and self._sign_key is not None:
            # As openleadr's create_message signs (detached, C14N 1.0, ReplayProtect), over the edited object.
            from openleadr.messaging import _create_replay_protect, get_signature_algorithm_from_private_key
            from signxml import methods
            from signxml.algorithms import SignatureMethod
            from signxml.signer import XMLSigner

            signer = XMLSigner(method=methods.detached, c14n_algorithm="http://www.w3.org/TR/2001/REC-xml-c14n-20010315")
            signer.namespaces["oadr"] = OADR_NS
            fragment = get_signature_algorithm_from_private_key(self._sign_key)
            signer.sign_alg = SignatureMethod.from_fragment(fragment)  # type: ignore[no-untyped-call]
            tree = signer.sign(etree.fromstring(signed_text), key=self._sign_key,
                               cert=self._sign_cert.decode("ascii"),
                               reference_uri="#oadrSignedObject", signature_properties=_create_replay_protect())
            signature = etree.tostring(tree).decode("utf-8")
        return (f'<?xml version="1.0" encoding="utf-8"?>\n<oadr:oadrPayload xmlns:oadr="{OADR_NS}">'
                f"{signature}{signed_text}</oadr:oadrPayload>")

    async def exchange(self, service: str, message_type: str, edit: Edit | None = None,
                       **payload: Any) -> tuple[str | None, dict[str, Any]]:
        """Send one message; (None, {}) for an empty answer. Raises VtnUnreachable or RefusedPayload."""
        body = self.build(message_type, edit, **payload)
        raw = await self.post(service, body)
        if not raw.strip():
            return None, {}
        return self.parse(raw)

    async def post(self, service: str, body: bytes) -> bytes:
        session = self._ensure_session()
        url = f"{self.vtn.url}/{service}"
        limit = self.vtn.max_body_bytes
        try:
            async with session.post(url, data=body) as resp:
                if resp.status != 200:
                    text = (await resp.content.read(300)).decode("utf-8", "replace")
                    raise VtnUnreachable(f"HTTP {resp.status} from {service}: {text.strip()[:200]!r}")
                declared = resp.content_length
                if declared is not None and declared > limit:
                    raise RefusedPayload(f"body of {declared} bytes is over the {limit}-byte limit")
                data = await resp.content.read(limit + 1)
                if len(data) > limit:
                    raise RefusedPayload(f"body over the {limit}-byte limit")
                return data
        except (aiohttp.ClientError, TimeoutError, ssl.SSLError, OSError) as exc:
            raise VtnUnreachable(f"{service}: {type(exc).__name__}: {exc}".strip()) from None

    def parse(self, raw: bytes) -> tuple[str, dict[str, Any]]:
        """Guard, validate against the 2.0b schema, check a signature if present, parse. Raises RefusedPayload."""
        check_raw(raw, self.vtn.max_body_bytes)
        try:
            tree = validate_xml_schema(raw)
        except etree.XMLSyntaxError as exc:
            raise RefusedPayload(f"fails the OpenADR 2.0b schema: {exc}") from None
        signed = tree.find(f".//{{{SIGNATURE_NS}}}Signature") is not None
        if signed and self.vtn.vtn_fingerprint:
            try:
                validate_xml_signature(tree, cert_fingerprint=self.vtn.vtn_fingerprint)
            except Exception as exc:  # signxml/openleadr raise several unrelated types
                raise RefusedPayload(f"XML signature refused: {type(exc).__name__}: {exc}") from None
        normalize_tree(tree)
        try:
            message_type, payload = parse_message(etree.tostring(tree))
        except Exception as exc:  # openleadr's converter raises whatever its regexes trip on
            raise RefusedPayload(f"cannot be converted: {type(exc).__name__}: {exc}") from None
        if not isinstance(payload, dict):
            raise RefusedPayload(f"{message_type} without a body")
        return str(message_type), payload
