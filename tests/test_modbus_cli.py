"""`gateway modbus read` against a simulated device, and what a user sees for a wrong model, an
unreachable device, or a config naming a map that does not exist."""

from __future__ import annotations

import asyncio
import socket
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow


async def _gateway(*args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)  # a bound for a busy machine, not a measurement
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_read_prints_decoded_values_of_a_meter_and_a_charger() -> None:
    meter, charger = SimMeter("carlo-gavazzi-em24"), SimCharger("alfen-ng9xx")
    meter.set_load(L1=10.0, L2=-4.0)
    charger.plug_in(ev_max_a=16.0)
    mp, cp = await meter.start(), await charger.start()
    try:
        (rc1, out1, err1), (rc2, out2, err2) = await asyncio.gather(
            _gateway("modbus", "read", "--model", "carlo-gavazzi-em24", "--host", "127.0.0.1", "--port", str(mp)),
            _gateway("modbus", "read", "--model", "alfen-ng9xx", "--host", "127.0.0.1", "--port", str(cp)),
        )
    finally:
        await meter.stop()
        await charger.stop()
    assert rc1 == 0, err1
    assert "current_l1       10 A" in out1 and "power_l2         -0.92 kW" in out1
    assert rc2 == 0, err2
    assert "status           'C2' → charging" in out2 and "setpoint" in out2


def test_wrong_model_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["modbus", "read", "--model", "abb-terra", "--host", "127.0.0.1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: unknown model 'abb-terra' (known: abb-terra-ac,")


def test_unreachable_device_is_one_line_and_exit_2(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    code = main(["modbus", "read", "--model", "eastron-sdm630", "--host", "127.0.0.1", "--port", str(port),
                 "--timeout", "1"])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: 127.0.0.1:{port} unit 1: cannot connect to 127.0.0.1:{port}"]


def test_models_lists_the_shipped_maps(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["modbus", "models"]) == 0
    out = capsys.readouterr().out
    assert "webasto-next" in out and "eastron-sdm630" in out and "meter" in out


def test_check_config_rejects_an_unknown_model_listing_the_known_ones(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 100\n\n'
        '[[meters]]\nid = "main"\nmodbus = { model = "eastron-sdm6300", host = "192.0.2.1" }\n'
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "meters[0].modbus.model: unknown model 'eastron-sdm6300' (known: abb-terra-ac, alfen-ng9xx," in err


def test_check_config_accepts_a_user_map_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    user_map = tmp_path / "my-meter.toml"
    user_map.write_text(
        'name = "my-meter"\nkind = "meter"\nvendor = "me"\nproduct = "p"\nsource = "my notes"\n'
        '[registers.current_l1]\ntable = "input"\naddress = 0\ntype = "float32"\n'
    )
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 100\n\n'
        f'[[meters]]\nid = "main"\nmodbus = {{ model = "{user_map}", host = "192.0.2.1" }}\n'
    )
    assert main(["check-config", str(path)]) == 0, capsys.readouterr().err


def test_check_config_names_the_broken_key_of_a_user_map_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    user_map = tmp_path / "acme.toml"
    user_map.write_text(
        'name = "acme"\nkind = "charger"\nvendor = "Acme"\nproduct = "W22"\nsource = "Acme Modbus v1"\n'
        'failsafe_timeout_s = 30\nrefresh_s = 20\n'
        '[registers.setpoint]\ntable = "holding"\naddress = 100\ntype = "uint16"\naccess = "w"\n'
    )
    path = tmp_path / "site.toml"
    path.write_text(
        '[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 100\n\n'
        '[[chargers]]\nid = "c1"\nprotocol = "modbus"\nphases = "L1-L2-L3"\nmax_a = 16\n'
        f'modbus = {{ model = "{user_map}", host = "192.0.2.1" }}\n'
    )
    assert main(["check-config", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: chargers[0].modbus.model: ") and str(user_map) in err[0]
    assert "refresh_s: at most half of failsafe_timeout_s (15 s)" in err[0]
    assert "Traceback" not in err[0]


async def test_read_a_keba_one_value_per_request() -> None:
    charger = SimCharger("keba-p30")
    charger.plug_in(ev_max_a=16.0)
    port = await charger.start()
    try:
        rc, out, err = await _gateway("modbus", "read", "--model", "keba-p30", "--host", "127.0.0.1",
                                      "--port", str(port))
    finally:
        await charger.stop()
    assert rc == 0, err
    assert "status           3 state" in out and "→ charging" in out and "WARNING" not in out
    assert "current_l1       16 A" in out and "holding 1008 (0x03F0)" in out
