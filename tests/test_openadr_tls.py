"""The VEN over HTTPS with mutual TLS against the openleadr VTN, using certificates from `gateway certs init`."""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import random
import re
import ssl
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pydantic
import pytest

from gateway.certs import DevPki, init_dev_pki
from gateway.cli import main
from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.domain import OptState, SignalType
from gateway.openadr.ven import Ven
from gateway.openadr.wire import VtnConfigError
from gateway.sim.vtn import SimVtn
from gateway.store.vtn import VenStore


def cli_pki(directory: Path) -> DevPki:
    """Certificates made as a user makes them: `gateway certs init DIR`, fingerprints read from its output."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["certs", "init", str(directory), "--ven-name", "site-1"]) == 0
    prints = dict(re.findall(r"(VTN|VEN) fingerprint: (\S+)", out.getvalue()))
    return DevPki(directory / "ca.crt", directory / "vtn.crt", directory / "vtn.key", directory / "ven.crt",
                  directory / "ven.key", prints["VTN"], prints["VEN"])


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return cli_pki(tmp_path_factory.mktemp("pki"))


@pytest.fixture
async def vtn(pki: DevPki) -> AsyncIterator[SimVtn]:
    sim = SimVtn(http_cert=str(pki.vtn_cert), http_key=str(pki.vtn_key), ca_file=str(pki.ca_cert),
                 ven_fingerprints={"site-1": pki.ven_fingerprint})
    await sim.start()
    yield sim
    await sim.stop()


def section(vtn: SimVtn, pki: DevPki, **kw: object) -> VtnSection:
    base: dict[str, object] = {
        "url": vtn.url, "ven_name": "site-1", "cert": str(pki.ven_cert), "key": str(pki.ven_key),
        "ca_file": str(pki.ca_cert), "vtn_fingerprint": pki.vtn_fingerprint, "poll_s": 0.05,
        "backoff_initial_s": 0.05, "backoff_max_s": 0.1, "request_timeout_s": 2.0,
    }
    base.update(kw)
    return VtnSection.model_validate(base)


async def running(tmp_path: Path, config: VtnSection) -> tuple[Ven, asyncio.Task[None], VenStore]:
    store = VenStore.open(tmp_path / "gw.sqlite")
    ven = Ven(config, OpenAdrSection(), store, rng=random.Random(1))
    return ven, asyncio.create_task(ven.run()), store


async def stop(task: asyncio.Task[None], store: VenStore) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    store.close()


async def test_mtls_registration_and_event_with_pinned_fingerprints(tmp_path: Path, vtn: SimVtn, pki: DevPki) -> None:
    assert vtn.url.startswith("https://")
    ven, task, store = await running(tmp_path, section(vtn, pki))
    try:
        await asyncio.wait_for(ven.registered.wait(), 5)
        assert vtn.vens[ven.ven_id or ""].fingerprint == pki.ven_fingerprint
        eid = vtn.add_event(ven.ven_id or "", [("LOAD_CONTROL", "x-loadControlCapacity", [0.4])],
                            start=datetime.now(UTC) + timedelta(minutes=5))
        for _ in range(200):
            if eid in store.events():
                break
            await asyncio.sleep(0.02)
        e = store.events()[eid]
        assert e.signals[0].type is SignalType.X_LOAD_CONTROL_CAPACITY and e.opt is OptState.OPT_IN
    finally:
        await stop(task, store)


async def test_xml_signatures_both_ways(tmp_path: Path, pki: DevPki) -> None:
    sim = SimVtn(http_cert=str(pki.vtn_cert), http_key=str(pki.vtn_key), ca_file=str(pki.ca_cert),
                 sign_cert=str(pki.vtn_cert), sign_key=str(pki.vtn_key), verify_signatures=True,
                 ven_fingerprints={"site-1": pki.ven_fingerprint})
    await sim.start()
    ven, task, store = await running(tmp_path, section(sim, pki, sign_messages=True))
    try:
        await asyncio.wait_for(ven.registered.wait(), 5)
        eid = sim.add_event(ven.ven_id or "", [("SIMPLE", "level", [2])])
        for _ in range(200):
            if sim.opt_responses:
                break
            await asyncio.sleep(0.02)
        assert sim.opt_responses == [(ven.ven_id, eid, "optIn")]
    finally:
        await stop(task, store)
        await sim.stop()


PROFILE_CIPHERS = {"ECDHE-ECDSA-AES128-SHA256", "AES128-SHA256"}  # the OpenADR 2.0b profile's two suites


def record_handshakes(vtn: SimVtn) -> list[tuple[str | None, str | None]]:
    """(protocol version, cipher suite) of every TLS handshake the VTN completes from now on, as its side
    of the connection saw them negotiated."""
    seen: list[tuple[str | None, str | None]] = []
    context = vtn.server.ssl_context
    assert isinstance(context, ssl.SSLContext) and context.sslobject_class is ssl.SSLObject

    class Recording(ssl.SSLObject):
        def do_handshake(self) -> None:
            super().do_handshake()  # raises SSLWantReadError until the handshake is complete
            cipher = self.cipher()
            seen.append((self.version(), cipher[0] if cipher else None))

    context.sslobject_class = Recording
    return seen


async def test_tls12_only_with_the_profile_cipher_suites(tmp_path: Path, vtn: SimVtn, pki: DevPki) -> None:
    handshakes = record_handshakes(vtn)
    ven, task, store = await running(tmp_path, section(vtn, pki, tls12_only=True))
    try:
        await asyncio.wait_for(ven.registered.wait(), 5)
    finally:
        await stop(task, store)
    assert handshakes, "no TLS handshake was seen"
    for version, cipher in handshakes:
        assert version == "TLSv1.2", handshakes
        assert cipher in PROFILE_CIPHERS, handshakes


async def test_without_tls12_only_the_same_vtn_negotiates_tls13(tmp_path: Path, vtn: SimVtn, pki: DevPki) -> None:
    """The check above can tell: left to itself, the same pair negotiates TLS 1.3."""
    handshakes = record_handshakes(vtn)
    ven, task, store = await running(tmp_path, section(vtn, pki))
    try:
        await asyncio.wait_for(ven.registered.wait(), 5)
    finally:
        await stop(task, store)
    assert handshakes and all(version == "TLSv1.3" for version, _ in handshakes), handshakes


async def test_wrong_vtn_fingerprint_is_refused_and_retried(
    tmp_path: Path, vtn: SimVtn, pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    ven, task, store = await running(tmp_path, section(vtn, pki, vtn_fingerprint="00:11:22:33:44:55:66:77:88:99"))
    try:
        for _ in range(200):
            if ven.failures >= 3:
                break
            await asyncio.sleep(0.02)
        assert ven.failures >= 3 and not ven.registered.is_set() and not vtn.vens
        lines = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(lines) == 1 and "fingerprint" in lines[0]
    finally:
        await stop(task, store)


async def test_ven_certificate_from_another_ca_is_refused_by_the_vtn(
    tmp_path: Path, vtn: SimVtn, pki: DevPki
) -> None:
    other = init_dev_pki(tmp_path / "other", ven_name="site-1")
    config = section(vtn, pki, cert=str(other.ven_cert), key=str(other.ven_key))
    ven, task, store = await running(tmp_path, config)
    try:
        for _ in range(200):
            if ven.failures >= 2:
                break
            await asyncio.sleep(0.02)
        assert ven.failures >= 2 and not vtn.vens
    finally:
        await stop(task, store)


def test_missing_or_mismatched_tls_files_are_one_clear_error(tmp_path: Path, pki: DevPki) -> None:
    store = VenStore.open(tmp_path / "gw.sqlite")
    try:
        missing = VtnSection(url="https://127.0.0.1:1/x", ven_name="v", cert=str(tmp_path / "nope.crt"),
                             key=str(pki.ven_key), ca_file=str(pki.ca_cert))
        with pytest.raises(VtnConfigError, match="cannot load TLS files") as err:
            Ven(missing, OpenAdrSection(), store)
        assert "\n" not in str(err.value)
        mismatched = VtnSection(url="https://127.0.0.1:1/x", ven_name="v", cert=str(pki.vtn_cert),
                                key=str(pki.ven_key), ca_file=str(pki.ca_cert))
        with pytest.raises(VtnConfigError):
            Ven(mismatched, OpenAdrSection(), store)
    finally:
        store.close()


def test_plain_http_needs_an_explicit_allow() -> None:
    with pytest.raises(pydantic.ValidationError, match="allow_plain_http"):
        VtnSection(url="http://vtn.example/OpenADR2/Simple/2.0b", ven_name="v")
    with pytest.raises(pydantic.ValidationError, match="ca_file"):
        VtnSection(url="https://vtn.example/x", ven_name="v", cert="a", key="b")
    with pytest.raises(pydantic.ValidationError, match="10 colon-separated"):
        VtnSection(url="https://vtn.example/x", ven_name="v", vtn_fingerprint="AB:CD")


def test_plain_http_logs_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    store = VenStore.open(tmp_path / "gw.sqlite")
    Ven(VtnSection(url="http://127.0.0.1:1/x", ven_name="v", allow_plain_http=True), OpenAdrSection(), store)
    store.close()
    assert any("plain HTTP" in r.getMessage() for r in caplog.records)


async def test_vtn_that_does_not_know_our_fingerprint_is_one_clear_line_and_retried(
    tmp_path: Path, pki: DevPki, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="gateway.openadr")
    sim = SimVtn(http_cert=str(pki.vtn_cert), http_key=str(pki.vtn_key), ca_file=str(pki.ca_cert),
                 ven_fingerprints={"site-1": "00:11:22:33:44:55:66:77:88:99"})
    await sim.start()
    ven, task, store = await running(tmp_path, section(sim, pki))
    try:
        for _ in range(200):
            if ven.failures >= 3:
                break
            await asyncio.sleep(0.02)
        assert ven.failures >= 3 and not ven.registered.is_set() and not sim.vens
        lines = [r.getMessage() for r in caplog.records if r.name == "gateway.openadr"]
        assert len(lines) == 1 and "registration refused" in lines[0] and "enrolled" in lines[0], lines
    finally:
        await stop(task, store)
        await sim.stop()
