"""`gateway check-config` on OCPP exposure: listening beyond loopback with chargers that need no password is
worth a warning (anyone on that network can pose as a charger); the example configs listen beyond loopback
with a password per charger and warn about nothing of the kind."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config import load_config
from gateway.config.checks import advisories

EXAMPLES = Path(__file__).resolve().parent.parent / "config"
BASE = """
[site]
name = "t"
wiring = "three-phase-400/230"
service_breaker_a = 63

[[chargers]]
id = "cp-1"
protocol = "ocpp1.6"
phases = "L1-L2-L3"
max_a = 32
fallback_a = 6
{password}

[[meters]]
id = "grid"
modbus = {{ model = "eastron-sdm630", host = "127.0.0.1", port = 1502 }}

[ocpp]
bind = "{bind}"
{ocpp}
"""


def notes(tmp_path: Path, bind: str, password: str = "", ocpp: str = "") -> list[str]:
    path = tmp_path / "site.toml"
    path.write_text(BASE.format(bind=bind, password=password, ocpp=ocpp))
    return [n for n in advisories(load_config(path)) if n.startswith("ocpp.")]


def test_ocpp_beyond_loopback_without_passwords_is_a_warning(tmp_path: Path) -> None:
    (note,) = notes(tmp_path, "0.0.0.0")
    assert note.startswith("ocpp.bind: OCPP listens on 0.0.0.0 with no password for cp-1 and no TLS: ")
    assert "require_password" in note and "\n" not in note


@pytest.mark.parametrize(("bind", "password", "ocpp"), [
    ("127.0.0.1", "", ""),  # loopback: nobody else can reach it
    ("::1", "", ""),
    ("0.0.0.0", 'ocpp = { password = "a-long-secret" }', ""),
    ("0.0.0.0", 'ocpp = { password = "a-long-secret" }', "require_password = true\n"),
])
def test_no_warning_when_only_this_host_or_only_chargers_with_passwords_can_connect(
    tmp_path: Path, bind: str, password: str, ocpp: str
) -> None:
    assert notes(tmp_path, bind, password, ocpp) == []


def test_the_cli_prints_it_as_a_warning_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "site.toml"
    path.write_text(BASE.format(bind="0.0.0.0", password="", ocpp=""))
    assert main(["check-config", str(path)]) == 0
    assert any(line.startswith("warning: ocpp.bind: ") for line in capsys.readouterr().err.splitlines())


def test_the_examples_listen_beyond_loopback_with_passwords(capsys: pytest.CaptureFixture[str]) -> None:
    for example in sorted(EXAMPLES.glob("example-*.toml")):
        config = load_config(example)
        ocpp = [ch for ch in config.chargers if ch.protocol != "modbus"]
        if not ocpp:
            continue
        assert config.ocpp.bind == "0.0.0.0" and config.ocpp.require_password, example.name
        assert all(ch.ocpp.password for ch in ocpp), example.name
        assert not [n for n in advisories(config) if n.startswith("ocpp.")], example.name
