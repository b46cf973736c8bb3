"""Development certificates for OpenADR 2.0b mutual TLS, and openleadr-style certificate fingerprints.

`init_dev_pki` makes a throw-away certificate authority and signs with it a VTN server certificate
(SANs for the given hosts, serverAuth) and a VEN client certificate (CN = VEN name, clientAuth), so a
site can be tried end to end over HTTPS before the utility's real PKI is involved. ECDSA P-256 by
default (the 2.0b profile's ECDHE-ECDSA suite), RSA 2048 on request (its RSA suite). The CA's private
key is never written: a development CA that cannot sign again cannot be abused later; make a new set
instead. `fingerprint` computes the pin both OpenADR sides exchange: the last 10 bytes of SHA-256 over
the DER certificate, colon-separated upper-case hex, exactly as openleadr computes it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey

CA_CERT = "ca.crt"
VTN_CERT = "vtn.crt"
VTN_KEY = "vtn.key"
VEN_CERT = "ven.crt"
VEN_KEY = "ven.key"
FILE_NAMES = (CA_CERT, VTN_CERT, VTN_KEY, VEN_CERT, VEN_KEY)

# Apple and the CA/Browser forum cap TLS server certificates at 825 days; longer ones fail on some clients.
MAX_DAYS = 825
# Allow for a VTN or VEN whose clock runs a little behind the machine that made the certificates.
BACKDATE = dt.timedelta(hours=1)


class CertError(Exception):
    """Something a user gave (a directory, a host, a file) cannot be used; the message is one line."""


@dataclass(frozen=True)
class DevPki:
    """Where `init_dev_pki` wrote each file, and the two fingerprints to exchange."""

    ca_cert: Path
    vtn_cert: Path
    vtn_key: Path
    ven_cert: Path
    ven_key: Path
    vtn_fingerprint: str
    ven_fingerprint: str


def fingerprint(cert_pem: bytes) -> str:
    """The OpenADR (openleadr) fingerprint of the first certificate in `cert_pem`: 'AB:CD:…' (10 bytes)."""
    try:
        cert = x509.load_pem_x509_certificate(cert_pem)
    except ValueError:
        raise CertError("not a PEM certificate (expected -----BEGIN CERTIFICATE-----)") from None
    return fingerprint_of(cert)


def fingerprint_of_file_bytes(data: bytes) -> str:
    """The fingerprint of a certificate file's contents, PEM or DER (utilities hand out either)."""
    if b"-----BEGIN" in data:
        return fingerprint(data)
    try:
        return fingerprint_of(x509.load_der_x509_certificate(data))
    except ValueError:
        raise CertError("not a certificate (neither PEM nor DER)") from None


def fingerprint_of(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).digest()
    return ":".join(f"{byte:02X}" for byte in digest[-10:])


def init_dev_pki(
    directory: Path,
    *,
    ven_name: str = "ven",
    vtn_hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = MAX_DAYS,
    key_type: KeyType = "ec",
    force: bool = False,
    now: dt.datetime | None = None,
) -> DevPki:
    """Write a development CA certificate, a VTN server pair and a VEN client pair into `directory`.

    Refuses (CertError) to overwrite any existing file unless `force`; checks every file before
    writing any, so a refusal leaves the directory as it was. Keys are written mode 0600.
    """
    directory = Path(directory)
    if not ven_name.strip():
        raise CertError("the VEN name is empty")
    if not vtn_hosts:
        raise CertError("give at least one VTN host name or IP address")
    if not 1 <= days <= MAX_DAYS:
        raise CertError(f"days must be between 1 and {MAX_DAYS}, got {days}")
    sans = [_san(host) for host in vtn_hosts]
    _prepare(directory, force=force)

    start = (now or dt.datetime.now(dt.UTC)) - BACKDATE
    end = start + BACKDATE + dt.timedelta(days=days)
    ca_key = _new_key(key_type)
    ca_name = x509.Name(
        [x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gateway development"),
         x509.NameAttribute(NameOID.COMMON_NAME, "gateway development CA")]
    )
    ca_cert = (
        _builder(ca_name, ca_name, ca_key, start, end)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .sign(ca_key, hashes.SHA256())
    )

    vtn_key = _new_key(key_type)
    vtn_cert = (
        _builder(_leaf_name(vtn_hosts[0]), ca_name, vtn_key, start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(rsa_key=key_type == "rsa"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    ven_key = _new_key(key_type)
    ven_cert = (
        _builder(_leaf_name(ven_name), ca_name, ven_key, start, end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(rsa_key=key_type == "rsa"), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(_authority_key_id(ca_cert), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    pki = DevPki(
        ca_cert=directory / CA_CERT,
        vtn_cert=directory / VTN_CERT,
        vtn_key=directory / VTN_KEY,
        ven_cert=directory / VEN_CERT,
        ven_key=directory / VEN_KEY,
        vtn_fingerprint=fingerprint_of(vtn_cert),
        ven_fingerprint=fingerprint_of(ven_cert),
    )
    _write(pki.ca_cert, _cert_pem(ca_cert), secret=False)
    _write(pki.vtn_cert, _cert_pem(vtn_cert), secret=False)
    _write(pki.vtn_key, _key_pem(vtn_key), secret=True)
    _write(pki.ven_cert, _cert_pem(ven_cert), secret=False)
    _write(pki.ven_key, _key_pem(ven_key), secret=True)
    return pki


def _san(host: str) -> x509.GeneralName:
    host = host.strip()
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    valid = bool(host) and len(host) <= 253 and all(
        0 < len(label) <= 63
        and label[0] != "-"
        and label[-1] != "-"
        and all(c.isascii() and (c.isalnum() or c == "-") for c in label)
        for label in (labels[1:] if labels[0] == "*" else labels)
    )
    if not valid:
        raise CertError(f"host {host!r} is neither an IP address nor a DNS name (ASCII letters, digits, '-', '.')")
    return x509.DNSName(host.rstrip("."))


def _prepare(directory: Path, *, force: bool) -> None:
    if directory.exists() and not directory.is_dir():
        raise CertError(f"{directory}: exists and is not a directory")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CertError(f"{directory}: cannot create the directory ({exc.strerror or exc})") from None
    if not os.access(directory, os.W_OK | os.X_OK):
        raise CertError(f"{directory}: the directory is not writable")
    existing = [name for name in FILE_NAMES if (directory / name).exists()]
    if existing and not force:
        verb = "exists" if len(existing) == 1 else "exist"
        raise CertError(f"{directory}: {', '.join(existing)} already {verb}; use --force to replace them")


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return ec.generate_private_key(ec.SECP256R1())


def _leaf_name(common_name: str) -> x509.Name:
    # A CN is limited to 64 characters (RFC 5280 ub-common-name); a longer VEN name is cut, not refused.
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name[:64])])


def _builder(
    subject: x509.Name, issuer: x509.Name, key: PrivateKey, start: dt.datetime, end: dt.datetime
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _authority_key_id(ca_cert: x509.Certificate) -> x509.AuthorityKeyIdentifier:
    ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    return x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski)


def _key_usage(*, cert_sign: bool = False, rsa_key: bool = False) -> x509.KeyUsage:
    # TLS_RSA_WITH_AES_128_CBC_SHA256 transports the premaster secret under the server's RSA key,
    # which needs keyEncipherment; ECDHE-ECDSA only signs.
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=rsa_key,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _write(path: Path, data: bytes, *, secret: bool) -> None:
    mode = 0o600 if secret else 0o644
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    except OSError as exc:
        raise CertError(f"{path}: cannot write ({exc.strerror or exc})") from None
    with os.fdopen(fd, "wb") as file:
        # An existing file keeps its old mode through O_CREAT; a key must not stay world-readable.
        os.fchmod(file.fileno(), mode)
        file.write(data)
