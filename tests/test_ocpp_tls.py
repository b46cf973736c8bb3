"""Security profile 2: TLS plus HTTP Basic auth, with a throwaway certificate for 127.0.0.1."""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import ssl
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from support.ocpp import PASSWORD, charger, section
from support.waiting import until

from gateway.ocpp import OcppDriver, OcppSetupError
from gateway.sim.ocpp_cp import SimChargePoint


def self_signed(tmp_path: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gateway.test")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


async def test_charger_connects_over_tls_with_basic_auth(tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    driver = OcppDriver(section(tls_cert=str(cert), tls_key=str(key)), [charger("cp1")])
    async with driver:
        assert driver.server.url_of("cp1").startswith("wss://127.0.0.1:")
        trust = ssl.create_default_context(cafile=str(cert))
        sim = SimChargePoint(f"wss://127.0.0.1:{driver.server.port}/ocpp", "cp1", password=PASSWORD, ssl=trust)
        await sim.start()
        try:
            await until(lambda: sim.limit_a() == 8.0)
            acks = await driver.apply_limits({"cp1": 13.0}, "over tls")
            assert acks[0].accepted and sim.limit_a() == 13.0
        finally:
            await sim.stop()


async def test_over_tls_a_wrong_password_is_refused_and_plain_ws_gets_nowhere(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cert, key = self_signed(tmp_path)
    driver = OcppDriver(section(tls_cert=str(cert), tls_key=str(key)), [charger("cp1")])
    async with driver:
        trust = ssl.create_default_context(cafile=str(cert))
        wrong = SimChargePoint(f"wss://127.0.0.1:{driver.server.port}/ocpp", "cp1", password="not-the-one", ssl=trust)
        plain = SimChargePoint(f"ws://127.0.0.1:{driver.server.port}/ocpp", "cp1", password=PASSWORD)
        with caplog.at_level(logging.WARNING, logger="gateway.ocpp"):
            await wrong.start(wait=False)
            await plain.start(wait=False)
            try:
                await until(lambda: wrong.refused is not None)
                await asyncio.sleep(0.3)  # give the plain one a few tries at the TLS port
            finally:
                await asyncio.gather(wrong.stop(), plain.stop())
        assert wrong.refused == 401 and "wrong password" in caplog.text
        assert not plain.connected.is_set() and plain.refused is None
        assert driver.controls["cp1"].station is None


async def test_unreadable_certificate_is_one_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "cert.pem"
    bad.write_text("not a certificate")
    driver = OcppDriver(section(tls_cert=str(bad), tls_key=str(bad)), [charger("cp1")])
    with pytest.raises(OcppSetupError, match=r"ocpp.tls_cert/tls_key: cannot load .*cert.pem"):
        await driver.start()
