"""Development mTLS certificates: a real TLS 1.2 handshake with them, openleadr's fingerprint, the CLI."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
import stat
import tomllib
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from openleadr.utils import certificate_fingerprint

from gateway.certs import FILE_NAMES, CertError, DevPki, fingerprint, init_dev_pki
from gateway.cli import main
from gateway.config.openadr import VtnSection

# The OpenADR 2.0b profile's two suites, in OpenSSL's names.
SUITE = {"ec": "ECDHE-ECDSA-AES128-SHA256", "rsa": "AES128-SHA256"}


@pytest.fixture(scope="module")
def ec_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki-ec"), ven_name="site-7")


@pytest.fixture(scope="module")
def rsa_pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki-rsa"), ven_name="site-7", key_type="rsa")


def _server_context(pki: DevPki, suite: str) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(suite)
    ctx.load_cert_chain(pki.vtn_cert, pki.vtn_key)
    ctx.load_verify_locations(pki.ca_cert)
    ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


def _client_context(pki: DevPki, suite: str, *, with_cert: bool = True) -> ssl.SSLContext:
    ctx = ssl.create_default_context(cafile=str(pki.ca_cert))
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers(suite)
    if with_cert:
        ctx.load_cert_chain(pki.ven_cert, pki.ven_key)
    return ctx


async def _handshake(server_ctx: ssl.SSLContext, client_ctx: ssl.SSLContext) -> tuple[str, str, bytes]:
    """Serve one TLS connection on 127.0.0.1; return the client's cipher, the peer CN the server saw, echo."""
    seen: asyncio.Queue[str] = asyncio.Queue()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peercert")
        subject = dict(item for rdn in peer["subject"] for item in rdn)
        seen.put_nowait(subject["commonName"])
        writer.write(await asyncio.wait_for(reader.readexactly(4), 5))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=server_ctx)
    port = server.sockets[0].getsockname()[1]
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection("127.0.0.1", port, ssl=client_ctx, server_hostname="127.0.0.1"), 5
        )
        writer.write(b"ping")
        echo = await asyncio.wait_for(reader.readexactly(4), 5)
        cipher = writer.get_extra_info("cipher")[0]
        writer.close()
        return cipher, await asyncio.wait_for(seen.get(), 5), echo
    finally:
        server.close()
        await server.wait_closed()


@pytest.mark.parametrize("kind", ["ec", "rsa"])
async def test_mutual_tls_12_handshake_with_the_profile_suite(kind: str, ec_pki: DevPki, rsa_pki: DevPki) -> None:
    pki = ec_pki if kind == "ec" else rsa_pki
    cipher, peer_cn, echo = await _handshake(
        _server_context(pki, SUITE[kind]), _client_context(pki, SUITE[kind])
    )
    assert cipher == SUITE[kind]
    assert peer_cn == "site-7"
    assert echo == b"ping"


async def test_a_client_without_a_certificate_is_refused(ec_pki: DevPki) -> None:
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _handshake(_server_context(ec_pki, SUITE["ec"]), _client_context(ec_pki, SUITE["ec"], with_cert=False))


async def test_the_client_refuses_a_host_name_not_in_the_vtn_certificate(tmp_path: Path) -> None:
    pki = init_dev_pki(tmp_path, vtn_hosts=("vtn.example",))
    with pytest.raises(ssl.SSLCertVerificationError):
        await _handshake(_server_context(pki, SUITE["ec"]), _client_context(pki, SUITE["ec"]))


async def test_a_client_certificate_from_another_ca_is_refused(ec_pki: DevPki, tmp_path: Path) -> None:
    stranger = init_dev_pki(tmp_path)
    client = ssl.create_default_context(cafile=str(ec_pki.ca_cert))
    client.minimum_version = client.maximum_version = ssl.TLSVersion.TLSv1_2
    client.load_cert_chain(stranger.ven_cert, stranger.ven_key)
    with pytest.raises((ssl.SSLError, ConnectionError, asyncio.IncompleteReadError)):
        await _handshake(_server_context(ec_pki, SUITE["ec"]), client)


def test_fingerprints_match_openleadrs_own_function(ec_pki: DevPki, rsa_pki: DevPki) -> None:
    for pki in (ec_pki, rsa_pki):
        assert pki.vtn_fingerprint == certificate_fingerprint(pki.vtn_cert.read_text())
        assert pki.ven_fingerprint == certificate_fingerprint(pki.ven_cert.read_text())
        assert fingerprint(pki.ca_cert.read_bytes()) == certificate_fingerprint(pki.ca_cert.read_text())
        parts = pki.vtn_fingerprint.split(":")
        assert len(parts) == 10 and all(len(p) == 2 and p == p.upper() for p in parts)


def test_certificate_contents(ec_pki: DevPki, rsa_pki: DevPki) -> None:
    vtn = x509.load_pem_x509_certificate(ec_pki.vtn_cert.read_bytes())
    ven = x509.load_pem_x509_certificate(ec_pki.ven_cert.read_bytes())
    ca = x509.load_pem_x509_certificate(ec_pki.ca_cert.read_bytes())
    san = vtn.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost"]
    assert san.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("127.0.0.1")]
    assert list(vtn.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.SERVER_AUTH
    ]
    assert list(ven.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == [
        ExtendedKeyUsageOID.CLIENT_AUTH
    ]
    assert ven.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "site-7"
    assert ca.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    assert vtn.issuer == ven.issuer == ca.subject
    vtn_key = vtn.public_key()
    assert isinstance(vtn_key, ec.EllipticCurvePublicKey)
    assert vtn_key.curve.name == "secp256r1"
    rsa_key = x509.load_pem_x509_certificate(rsa_pki.ven_cert.read_bytes()).public_key()
    assert isinstance(rsa_key, rsa.RSAPublicKey) and rsa_key.key_size == 2048


def test_keys_are_private_and_certificates_readable(ec_pki: DevPki) -> None:
    for key in (ec_pki.vtn_key, ec_pki.ven_key):
        assert stat.S_IMODE(key.stat().st_mode) == 0o600
    for cert in (ec_pki.ca_cert, ec_pki.vtn_cert, ec_pki.ven_cert):
        assert stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert sorted(p.name for p in ec_pki.ca_cert.parent.iterdir()) == sorted(FILE_NAMES)


def test_refuses_to_overwrite_unless_forced(tmp_path: Path) -> None:
    first = init_dev_pki(tmp_path)
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    with pytest.raises(CertError, match="already exist"):
        init_dev_pki(tmp_path)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    first.ven_key.chmod(0o644)
    second = init_dev_pki(tmp_path, force=True)
    assert second.vtn_fingerprint != first.vtn_fingerprint
    assert stat.S_IMODE(second.ven_key.stat().st_mode) == 0o600


def test_one_existing_file_is_enough_to_refuse(tmp_path: Path) -> None:
    (tmp_path / "ven.key").write_text("precious")
    with pytest.raises(CertError, match=r"ven\.key already exists;"):
        init_dev_pki(tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["ven.key"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"vtn_hosts": ("bad host!",)}, "neither an IP address nor a DNS name"),
        ({"vtn_hosts": ()}, "at least one"),
        ({"ven_name": " "}, "VEN name is empty"),
        ({"days": 0}, "days must be"),
        ({"days": 5000}, "days must be"),
    ],
)
def test_bad_arguments_are_refused_before_writing(tmp_path: Path, kwargs: dict[str, object], message: str) -> None:
    with pytest.raises(CertError, match=message):
        init_dev_pki(tmp_path / "pki", **kwargs)  # type: ignore[arg-type]
    assert not (tmp_path / "pki").exists()


def test_fingerprint_of_something_else_is_a_clear_error() -> None:
    with pytest.raises(CertError, match="not a PEM certificate"):
        fingerprint(b"hello")


def test_cli_init_prints_fingerprints_and_config_lines(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "new" / "pki"
    assert main(["certs", "init", str(target), "--ven-name", "depot-3", "--host", "vtn.test", "--host", "::1"]) == 0
    out = capsys.readouterr().out
    vtn_fp = certificate_fingerprint((target / "vtn.crt").read_text())
    ven_fp = certificate_fingerprint((target / "ven.crt").read_text())
    assert f"VTN fingerprint: {vtn_fp}" in out
    assert f"VEN fingerprint: {ven_fp}" in out
    assert f'vtn_fingerprint = "{vtn_fp}"' in out
    assert f'cert = "{target.resolve() / "ven.crt"}"' in out
    assert f'ca_file = "{target.resolve() / "ca.crt"}"' in out
    # The block printed for the site config is valid as it stands once the VTN's url is filled in.
    block = out[out.index("[vtn]"):out.index("\n\n", out.index("[vtn]"))]
    section = tomllib.loads(block)["vtn"]
    vtn = VtnSection.model_validate({**section, "url": "https://vtn.test:8443/OpenADR2/Simple/2.0b"})
    assert vtn.ven_name == "depot-3" and vtn.vtn_fingerprint == vtn_fp and vtn.cert == str(target.resolve() / "ven.crt")
    san = x509.load_pem_x509_certificate((target / "vtn.crt").read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.IPAddress) == [ipaddress.ip_address("::1")]

    assert main(["certs", "fingerprint", str(target / "ven.crt")]) == 0
    assert capsys.readouterr().out.strip() == ven_fp
    der = tmp_path / "ven.der"
    der.write_bytes(ssl.PEM_cert_to_DER_cert((target / "ven.crt").read_text()))
    assert main(["certs", "fingerprint", str(der)]) == 0
    assert capsys.readouterr().out.strip() == ven_fp


def test_cli_rsa_option(tmp_path: Path) -> None:
    assert main(["certs", "init", str(tmp_path), "--rsa"]) == 0
    key = x509.load_pem_x509_certificate((tmp_path / "vtn.crt").read_bytes()).public_key()
    assert isinstance(key, rsa.RSAPublicKey)


def test_cli_refuses_overwrite_then_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["certs", "init", str(tmp_path)]) == 0
    capsys.readouterr()
    assert main(["certs", "init", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "--force" in err
    assert main(["certs", "init", str(tmp_path), "--force"]) == 0


@pytest.mark.parametrize("where", ["a file", "under a file"])
def test_cli_bad_directory_is_one_line_and_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], where: str
) -> None:
    blocker = tmp_path / "plain-file"
    blocker.write_text("x")
    target = blocker if where == "a file" else blocker / "pki"
    assert main(["certs", "init", str(target)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ")
    assert "Traceback" not in err


@pytest.mark.parametrize("content", [None, b"not a certificate", b"\xff\xfe"])
def test_cli_fingerprint_of_a_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes | None
) -> None:
    path = tmp_path / "x.crt"
    if content is not None:
        path.write_bytes(content)
    assert main(["certs", "fingerprint", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith(f"error: {path}")


async def test_openleadr_registers_over_mtls_with_the_dev_certificates(ec_pki: DevPki) -> None:
    """A real openleadr VTN and VEN with these files: TLS both ways, and each side pins the other's fingerprint."""
    from openleadr import OpenADRClient, OpenADRServer

    def ven_lookup(ven_id: str) -> dict[str, str]:
        return {"ven_id": ven_id, "ven_name": "site-7", "fingerprint": ec_pki.ven_fingerprint,
                "registration_id": "reg-1"}

    async def on_create_party_registration(payload: dict[str, object]) -> tuple[str, str]:
        return "ven-1", "reg-1"

    server = OpenADRServer(
        vtn_id="test-vtn", http_host="127.0.0.1", http_port=0,
        http_cert=str(ec_pki.vtn_cert), http_key=str(ec_pki.vtn_key), http_ca_file=str(ec_pki.ca_cert),
        cert=str(ec_pki.vtn_cert), key=str(ec_pki.vtn_key), ven_lookup=ven_lookup,
    )
    server.add_handler("on_create_party_registration", on_create_party_registration)
    await server.run_async()
    port = server.app_runner.addresses[0][1]
    url = f"https://127.0.0.1:{port}/OpenADR2/Simple/2.0b"
    try:
        for pin, expected in ((ec_pki.vtn_fingerprint, "ven-1"), ("00:00:00:00:00:00:00:00:00:00", None)):
            client = OpenADRClient(
                ven_name="site-7", vtn_url=url, cert=str(ec_pki.ven_cert), key=str(ec_pki.ven_key),
                ca_file=str(ec_pki.ca_cert), vtn_fingerprint=pin,
            )
            try:
                answer = await asyncio.wait_for(client.create_party_registration(ven_id="ven-1"), 15)
            finally:
                await client.stop()
            assert (answer[1]["ven_id"] if answer else None) == expected
    finally:
        await server.stop()
