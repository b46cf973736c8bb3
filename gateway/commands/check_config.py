"""`gateway check-config FILE`: validate a site config and print a short summary of the site.

Valid: the summary on stdout and a `warning:` line on stderr for each thing worth a second look
(including certificate and key files that are missing or too open, relative to the current directory,
as the gateway will open them), exit 0. Not valid: one `error: <path>: <message>` line per problem on
stderr, exit 2, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from gateway.config import GatewayConfig

NAME = "check-config"
HELP = "validate a site config (TOML) and summarise the site"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", help="the site config, TOML")
    parser.add_argument("-q", "--quiet", action="store_true", help="print nothing when the config is valid")


def run(args: argparse.Namespace) -> int:
    from gateway.config import ConfigError, load_config
    from gateway.config.checks import advisories
    from gateway.config.summary import summarise

    try:
        config = load_config(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    if not args.quiet:
        try:
            print(summarise(config), flush=True)
        except BrokenPipeError:
            # `gateway check-config site.toml | head`: the reader has seen enough; no traceback at exit.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        for note in [*advisories(config), *file_advisories(config)]:
            print(f"warning: {note}", file=sys.stderr)
    return 0


def file_advisories(config: GatewayConfig, now: dt.datetime | None = None) -> list[str]:
    """Certificate and key files the gateway will open: missing, unreadable, not PEM, expired, mismatched,
    or keys others can read; and a VEN name that differs from the VEN certificate's."""
    from gateway.certs import CertError, fingerprint

    now = now or dt.datetime.now(dt.UTC)

    files: list[tuple[str, str | None, str]] = []
    if config.vtn is not None:
        files += [("vtn.cert", config.vtn.cert, "cert"), ("vtn.key", config.vtn.key, "key")]
        files += [("vtn.ca_file", config.vtn.ca_file, "cert")]
    files += [("ocpp.tls_cert", config.ocpp.tls_cert, "cert"), ("ocpp.tls_key", config.ocpp.tls_key, "key")]
    notes = []
    readable: dict[str, bytes] = {}
    for where, name, kind in files:
        if name is None:
            continue
        path = Path(name)
        try:
            data = path.read_bytes()
        except OSError as exc:
            hint = " (development ones: gateway certs init DIR)" if where.startswith("vtn.") else ""
            notes.append(f"{where}: cannot read {name} ({exc.strerror or exc}){hint}")
            continue
        if kind == "cert":
            try:
                fingerprint(data)
            except CertError as exc:
                notes.append(f"{where}: {name}: {exc}")
                continue
            notes += _validity(where, name, data, now)
        elif stat.S_IMODE(path.stat().st_mode) & 0o077:
            notes.append(f"{where}: {name} can be read by other users (chmod 600 {name})")
        readable[where] = data
    for cert, key in (("vtn.cert", "vtn.key"), ("ocpp.tls_cert", "ocpp.tls_key")):
        if cert in readable and key in readable and not _pair(readable[cert], readable[key]):
            notes.append(f"{key}: not the private key of {cert} (or not a PEM key without a passphrase)")
    if config.vtn is not None and "vtn.cert" in readable:
        names = _common_names(readable["vtn.cert"])
        if names and config.vtn.ven_name not in names:
            notes.append(
                f"vtn.ven_name: {config.vtn.ven_name!r} is not the VEN certificate's name ({', '.join(names)}); "
                "VTNs that check the two will refuse it"
            )
    return notes


# A certificate that expires within this many days is worth renewing now: enrolment takes time.
EXPIRY_WARNING_DAYS = 30


def _validity(where: str, name: str, pem: bytes, now: dt.datetime) -> list[str]:
    from cryptography import x509

    cert = x509.load_pem_x509_certificate(pem)
    if now < cert.not_valid_before_utc:
        return [f"{where}: {name} is not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC"]
    if now > cert.not_valid_after_utc:
        return [f"{where}: {name} expired on {cert.not_valid_after_utc:%Y-%m-%d}"]
    left = cert.not_valid_after_utc - now
    if left < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return [f"{where}: {name} expires on {cert.not_valid_after_utc:%Y-%m-%d}, in {left.days} days"]
    return []


def _common_names(pem: bytes) -> list[str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(pem)
    return [str(a.value) for a in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)]


def _pair(cert_pem: bytes, key_pem: bytes) -> bool:
    from cryptography import x509
    from cryptography.hazmat.primitives import serialization

    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        return False
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    cert_key = x509.load_pem_x509_certificate(cert_pem).public_key()
    return bool(
        cert_key.public_bytes(serialization.Encoding.DER, public)
        == key.public_key().public_bytes(serialization.Encoding.DER, public)
    )
