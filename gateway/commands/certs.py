"""`gateway certs init DIR` makes development mTLS certificates; `gateway certs fingerprint FILE` prints a pin.

`init` writes a development CA, a VTN server pair and a VEN client pair, then prints what goes into the
site config's `[vtn]` section and what the VTN side needs (its own pair, the CA, the VEN's fingerprint).
Production certificates come from the utility's or the OpenADR Alliance's PKI, never from here.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

NAME = "certs"
HELP = "make development OpenADR mTLS certificates, or print a certificate's fingerprint"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="certs_command", metavar="ACTION", required=True)
    init = sub.add_parser(
        "init",
        help="write a development CA, VTN and VEN certificates into DIR",
        description="write a development CA, VTN and VEN certificates into DIR (for testing only)",
    )
    init.add_argument("directory", metavar="DIR", help="where to write the files (created if missing)")
    init.add_argument("--ven-name", default="ven", help="the VEN's name, used as its certificate's CN")
    init.add_argument(
        "--host",
        action="append",
        dest="hosts",
        metavar="H",
        help="a DNS name or IP address the VTN is reached at (repeatable; default localhost and 127.0.0.1)",
    )
    init.add_argument("--rsa", action="store_true", help="RSA 2048 keys (the 2.0b RSA suite) instead of ECDSA P-256")
    init.add_argument("--days", type=int, default=825, help="validity in days (1..825, default 825)")
    init.add_argument("--force", action="store_true", help="replace existing files")
    fp = sub.add_parser(
        "fingerprint",
        help="print a certificate's OpenADR fingerprint",
        description="print a certificate's OpenADR fingerprint (last 10 bytes of its SHA-256, as openleadr)",
    )
    fp.add_argument("file", metavar="FILE", help="a certificate, PEM or DER")


def run(args: argparse.Namespace) -> int:
    from gateway.certs import CertError

    try:
        if args.certs_command == "fingerprint":
            return _fingerprint(Path(args.file))
        return _init(args)
    except CertError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _fingerprint(path: Path) -> int:
    from gateway.certs import CertError, fingerprint_of_file_bytes

    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CertError(f"{path}: cannot read ({exc.strerror or exc})") from None
    try:
        print(fingerprint_of_file_bytes(data))
    except CertError as exc:
        raise CertError(f"{path}: {exc}") from None
    return 0


def _init(args: argparse.Namespace) -> int:
    from gateway.certs import init_dev_pki

    hosts = tuple(args.hosts) if args.hosts else ("localhost", "127.0.0.1")
    pki = init_dev_pki(
        Path(args.directory),
        ven_name=args.ven_name,
        vtn_hosts=hosts,
        days=args.days,
        key_type="rsa" if args.rsa else "ec",
        force=args.force,
    )
    directory = Path(args.directory).resolve()
    kind = "RSA 2048" if args.rsa else "ECDSA P-256"
    print(f"wrote development certificates ({kind}, for testing only) to {directory}")
    print(f"  VTN fingerprint: {pki.vtn_fingerprint}")
    print(f"  VEN fingerprint: {pki.ven_fingerprint}")
    print()
    print("Paste into the site config (the VEN side):")
    print("[vtn]")
    print(f'# url = "https://{hosts[0]}:PORT/OpenADR2/Simple/2.0b"   (the VTN\'s address, up to the service names)')
    print(f"ven_name = {_toml_string(args.ven_name)}")
    print(f"cert = {_toml_string(str(directory / pki.ven_cert.name))}")
    print(f"key = {_toml_string(str(directory / pki.ven_key.name))}")
    print(f"ca_file = {_toml_string(str(directory / pki.ca_cert.name))}")
    print(f'vtn_fingerprint = "{pki.vtn_fingerprint}"')
    print()
    print("Hand the VTN (the utility, or a test VTN):")
    print(f"  VEN name {args.ven_name!r} and VEN fingerprint {pki.ven_fingerprint}")
    print(f"  its server pair {pki.vtn_cert.name} / {pki.vtn_key.name} (hosts: {', '.join(hosts)})")
    print(f"  and {pki.ca_cert.name} to verify VEN client certificates")
    return 0


def _toml_string(value: str) -> str:
    """A TOML basic string (JSON's escaping is valid TOML for it)."""
    import json

    return json.dumps(value, ensure_ascii=False)
