"""`gateway commission`: the checklist run as a subprocess against simulated chargers and a meter.

Real peers on loopback: OCPP 1.6J and 2.0.1 charge points (the `ocpp` library) dialling into the
gateway's port (read off its progress line), a pymodbus charger and meter whose reading follows what the
chargers draw. The report must name every charger PASS with its latencies, the firmware versions their
BootNotifications gave, and the fail-safe settings; a charger that never connects is FAILED with why and
the exit code is 1. The pure parts (thresholds, verdict, Markdown) are tested without a site.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.commissioning import (
    ChargerResult,
    Check,
    Identity,
    Outcome,
    PeakResult,
    Report,
    StepResult,
    moved,
    passed,
    peak_cap_kw,
    peak_tolerance_kw,
    render,
    step_check,
)
from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter
from gateway.sim.ocpp_cp import Ev, Nameplate, SimChargePoint

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

HOUSE_A = 10.0
FIRMWARE = {"cp16": "FW-16-1.2.3", "cp201": "FW-201-4.5.6"}


@dataclass
class Site:
    modbus: SimCharger
    meter: SimMeter
    ocpp: dict[str, SimChargePoint] = field(default_factory=dict)

    def draw_a(self) -> float:
        return sum(cp.draw_a() for cp in self.ocpp.values()) + self.modbus.drawing_a

    async def follow(self) -> None:
        while True:  # the grid meter sees the house and every charger (all three-phase)
            amps = HOUSE_A + self.draw_a()
            self.meter.set_load(L1=amps, L2=amps, L3=amps)
            await asyncio.sleep(0.05)


@pytest.fixture
async def site() -> AsyncIterator[Site]:
    charger = SimCharger("generic-charger", rating_a=16.0)
    await charger.start()
    charger.plug_in(ev_max_a=16.0, phases=3)
    meter = SimMeter("eastron-sdm630")
    await meter.start()
    s = Site(charger, meter)
    follower = asyncio.create_task(s.follow())
    try:
        yield s
    finally:
        follower.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await follower
        for cp in s.ocpp.values():
            await cp.stop()
        await charger.stop()
        await meter.stop()


def config_text(site: Site, tmp_path: Path, ocpp: dict[str, str], idle: SimCharger | None = None) -> str:
    lines = ['[site]', 'name = "commissioning test site"', 'wiring = "three-phase-400/230"',
             "service_breaker_a = 100", ""]
    for cid, version in ocpp.items():
        lines += ["[[chargers]]", f'id = "{cid}"', f'protocol = "ocpp{version}"', 'phases = "L1-L2-L3"',
                  "max_a = 16", "fallback_a = 6", ""]
    lines += ["[[chargers]]", 'id = "mb"', 'protocol = "modbus"', 'phases = "L1-L2-L3"', "max_a = 16",
              "fallback_a = 6",
              f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {site.modbus.port} }}',
              ""]
    if idle is not None:  # a second Modbus charger with no EV
        lines += ["[[chargers]]", 'id = "mb-idle"', 'protocol = "modbus"', 'phases = "L1-L2-L3"', "max_a = 16",
                  f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {idle.port} }}', ""]
    lines += ["[[meters]]", 'id = "grid"', "poll_s = 0.25", "stale_after_s = 5",
              f'modbus = {{ model = "eastron-sdm630", host = "127.0.0.1", port = {site.meter.port} }}', "",
              "[ocpp]", "port = 0", "meter_interval_s = 1", "lease_s = 30", "ack_wait_s = 2", "",
              "[control]", "tick_s = 0.25", "min_on_time_s = 0", "charger_stale_s = 10", "",
              "[status]", "port = 0", "", "[store]", f'path = "{tmp_path / "site.sqlite"}"', ""]
    return "\n".join(lines)


async def commission(site: Site, tmp_path: Path, ocpp: dict[str, str], start: set[str], *options: str,
                     idle: SimCharger | None = None) -> tuple[int, str, str]:
    """Run `gateway commission` as a subprocess; start the OCPP charge points in `start` (EV plugged in) once
    it says where it listens. Returns the exit code, the report and stderr."""
    config = tmp_path / "site.toml"
    config.write_text(config_text(site, tmp_path, ocpp, idle))
    report = tmp_path / "commissioning.md"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway", "commission", "--config", str(config), "--report", str(report), *options,
        stderr=asyncio.subprocess.PIPE, cwd=tmp_path)
    assert proc.stderr is not None
    lines: list[str] = []
    listening = asyncio.get_running_loop().create_future()

    async def read() -> None:
        assert proc.stderr is not None
        async for raw in proc.stderr:
            line = raw.decode()
            lines.append(line)
            found = re.search(r"listening on (ws://\S+)/<id>", line)
            if found and not listening.done():
                listening.set_result(found.group(1))

    reader = asyncio.create_task(read())
    try:
        base = await asyncio.wait_for(listening, 15)
        for cid in start:
            plate = Nameplate(model="SimAC", firmware=FIRMWARE.get(cid), serial=f"SN-{cid}")
            cp = SimChargePoint(base, cid, version=ocpp[cid], meter_interval_s=1.0,  # type: ignore[arg-type]
                                nameplate=plate)
            await cp.start()
            site.ocpp[cid] = cp
            await cp.plug_in(Ev(max_a=16.0, plugged=True))
        code = await asyncio.wait_for(proc.wait(), 60)
        await asyncio.wait_for(reader, 5)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        reader.cancel()
    return code, report.read_text() if report.exists() else "", "".join(lines)


def row(report: str, *cells: str, section: str = "") -> list[str]:
    """The first table row (after the heading `section`) whose leading cells are `cells`, split into cells."""
    start = report.index(f"## {section}") if section else 0
    for line in report[start:].splitlines():
        parts = [p.strip() for p in line.strip().strip("|").split("|")]
        if parts[: len(cells)] == list(cells):
            return parts
    raise AssertionError(f"no row {cells} in the report:\n{report}")


def seconds(cell: str) -> float:
    found = re.fullmatch(r"(\d+\.\d+) s", cell)
    assert found, f"not a latency: {cell!r}"
    return float(found.group(1))


async def test_every_charger_passes_with_latencies_firmware_and_fail_safe(site: Site, tmp_path: Path) -> None:
    ocpp = {"cp16": "1.6", "cp201": "2.0.1"}
    code, report, err = await commission(site, tmp_path, ocpp, set(ocpp), "--wait-s", "10", "--timeout-s", "5",
                                         "--peak-s", "2")
    assert "Traceback" not in err and "receive message" not in err  # the wire stays out of the log
    assert code == 0, err + report
    assert "**Result: PASS**" in report
    for cid in ("cp16", "cp201", "mb"):
        for check in ("read", "fail-safe", "step"):
            assert row(report, f"charger {cid}", check)[2] == "PASS"
        step = row(report, cid, section="Step response")
        assert step[3:5] == ["6 A", "accepted"]
        down, up, meter, meter_down, meter_up = step[5:10]
        assert meter == "grid"
        assert all(seconds(c) >= 0 for c in (down, up, meter_down, meter_up))
    for cid, firmware in FIRMWARE.items():
        assert row(report, f"charger {cid}", "connect")[2] == "PASS"
        assert row(report, cid, "Sim", "SimAC", firmware, f"SN-{cid}")
        assert f"commission: charger {cid} is there, firmware {firmware}\n" in err
    assert row(report, "mb", "generic", "reference layout", "not reported")
    # Fail-safe settings: OCPP base profile at the fallback and the lease; Modbus registers read back.
    assert "6 A, no end: accepted" in row(report, "cp16", "base profile")[2]
    assert row(report, "cp201", "lease")[2] == "validTo 30 s ahead, renewed at half"
    assert row(report, "mb", "failsafe_current register")[2] == "6 A (read back)"
    assert row(report, "mb", "failsafe_timeout register")[2] == "30 s (read back)"
    assert row(report, "meter grid", "read")[2] == "PASS"
    assert row(report, "site", "peak")[2] == "PASS"
    lowered = float(row(report, "Lowered limit")[1].removesuffix(" kW"))
    highest = float(row(report, "Highest reading while held")[1].removesuffix(" kW"))
    assert highest <= lowered + peak_tolerance_kw(lowered)
    assert row(report, "Readings above the limit")[1] == "0"
    # stepped from the limit it held then (whatever the sharing gave it at that moment), to 6 A, and back
    held = row(report, "cp16", section="Step response")[2]
    assert f"commission: charger cp16: stepping {held} -> 6 A and back" in err
    assert not (tmp_path / "site.sqlite").exists()  # a scratch store: the site's own was not touched
    # Left on their fail-safe current: the OCPP live profiles cleared, only the 6 A base remains.
    assert all(cp.limit_a() == 6.0 for cp in site.ocpp.values())


async def test_a_charger_that_never_connects_is_failed_and_one_without_an_ev_not_tested(
        site: Site, tmp_path: Path) -> None:
    ocpp = {"cp-absent": "2.0.1"}
    idle = SimCharger("generic-charger", rating_a=16.0)
    await idle.start()
    try:
        code, report, err = await commission(site, tmp_path, ocpp, set(), "--wait-s", "1.5", "--timeout-s", "4",
                                             "--peak-s", "1", idle=idle)
    finally:
        await idle.stop()
    assert "Traceback" not in err
    assert code == 1
    assert "**Result: FAILED**" in report
    result, why = row(report, "charger cp-absent", "connect")[2:4]
    assert result == "FAILED"
    assert why.startswith("did not connect within 1.5 s: set its central system URL to ws://127.0.0.1:")
    assert why.endswith("/ocpp/cp-absent, check its password and that it speaks OCPP 2.0.1")
    assert row(report, "charger mb", "step")[2] == "PASS"
    result, why = row(report, "charger mb-idle", "step")[2:4]
    assert result == "NOT TESTED" and "it draws 0.0 A" in why and "plug one in" in why
    assert row(report, "charger mb-idle", "fail-safe")[2] == "PASS"
    assert "charger cp-absent: connect FAILED" in err


def test_bad_options_and_configs_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = tmp_path / "site.toml"
    good.write_text('[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 63\n\n'
                    '[[chargers]]\nid = "a"\nprotocol = "ocpp1.6"\nphases = "L1"\nmax_a = 16\n')
    assert main(["commission", "--config", str(good), "--step-a", "3", "--wait-s", "0"]) == 2
    err = capsys.readouterr().err.splitlines()
    assert err == ["error: --wait-s: must be more than 0 s (got 0)",
                   "error: --step-a: 3 A: must be 0 (pause) or at least 6 A"]
    assert main(["commission", "--config", str(tmp_path / "missing.toml")]) == 2
    assert capsys.readouterr().err.startswith("error: ")
    empty = tmp_path / "empty.toml"
    empty.write_text('[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 63\n')
    assert main(["commission", "--config", str(empty)]) == 2
    assert "nothing to commission" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------ pure parts


def test_moved_and_the_peak_cap() -> None:
    assert moved(16.0, 6.0, 8.0) and not moved(16.0, 6.0, 9.0)  # 80 % of the way down is at 8 A
    assert moved(6.0, 16.0, 14.0) and not moved(6.0, 16.0, 13.9)
    assert moved(5.0, 5.0, 0.0)
    assert peak_cap_kw(40.0, 30.0) == 25.0


def _charger(*checks: Check, step: StepResult | None = None) -> ChargerResult:
    return ChargerResult("cp-1", "ocpp1.6", ("L1", "L2", "L3"), "main", 6.0, 32.0, 1.0, 0, 6.0, checks,
                         Identity("V", "M", "9.9", None), "Charging", {"L1": 16.0}, (("lease", "validTo 60 s"),),
                         step)


def _report(*chargers: ChargerResult, peak: PeakResult | None = None) -> Report:
    at = datetime(2026, 1, 1, tzinfo=UTC)
    return Report("site", "site.toml", "0", at, at, (), (("Wiring", "x"),), chargers, (), peak)


def test_a_check_not_made_is_not_a_pass_and_the_report_says_why() -> None:
    ok = Check("read", Outcome.PASS, "fine")
    skipped = Check("step", Outcome.SKIP, "it draws 0.0 A")
    assert passed(_report(_charger(ok)))
    assert not passed(_report(_charger(ok, skipped)))
    assert not passed(_report())
    text = render(_report(_charger(ok, skipped)))
    assert "**Result: FAILED** (1 of 2 checks passed)" in text
    assert "| charger cp-1 | step | NOT TESTED | it draws 0.0 A |" in text
    assert "| cp-1 | V | M | 9.9 | — | Charging | L1 16.0 A |" in text
    assert "| cp-1 | lease | validTo 60 s |" in text


def test_a_step_the_meter_does_not_see_fails_with_a_hint() -> None:
    step = StepResult(16.0, 16.0, 6.0, "accepted", 1.2, 1.1, "grid", None, 0.9)
    check = step_check(step, 5.0)
    assert check.outcome is Outcome.FAIL and "meter grid did not see the step" in check.detail
    ignored = StepResult(16.0, 16.0, 6.0, "accepted", None, 0.0, "grid", None, None)
    assert step_check(ignored, 5.0).detail == ("the charger's current did not fall to 6 A within 5 s")
    good = StepResult(16.0, 16.0, 6.0, "accepted", 1.2, 1.1, "grid", 0.8, 0.9)
    assert step_check(good, 5.0) == Check("step", Outcome.PASS, "followed: down in 1.20 s, up in 1.10 s")
    text = render(_report(_charger(step_check(good, 5.0), step=good)))
    assert "| cp-1 | 16.0 A | 16 A | 6 A | accepted | 1.20 s | 1.10 s | grid | 0.80 s | 0.90 s |" in text
