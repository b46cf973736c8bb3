"""A mixed OCPP site through boot, a reconnect wave, SIGKILL and immediate restart inside the lease,
SIGKILL and restart after the leases ran out, an operator cap and a pause across restarts, and a clean
stop: `gateway run` in a subprocess, strict simulated charge points (1.6J and 2.0.1; three- and
single-phase; W-only; stack level 0) in this process. The verdict is read from the chargers' own record
of what they held and drew (`conductor_check`): 0 instants over any conductor's limit or the operator's
cap, 0 rejected profiles, the gateway's acknowledged limit equal to the charger's limit in force, the
paused charger at 0 A, and no EV that was charging set to 0 A by a restart.
"""

from __future__ import annotations

import asyncio
import json
import socket
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.conductors import overloads, zero_spans
from support.gateway_process import Gateway
from support.waiting import until

from gateway.config import load_config
from gateway.sim.ocpp_cp import Ev, Quirks, SimChargePoint

pytestmark = pytest.mark.slow
TOKEN = "site-safety-token"
LEASE_S = 6.0
CAP_KW = 18.0
# id, protocol, phases, what it reports (and so enforces)
CHARGERS: list[tuple[str, str, str, dict[str, str]]] = [
    ("c201-a", "ocpp2.0.1", "L3", {}),
    ("c16-a", "ocpp1.6", "L1-L2-L3", {}),
    ("c16-sl0", "ocpp1.6", "L1-L2-L3", {"ChargeProfileMaxStackLevel": "0"}),
    ("c16-w", "ocpp1.6", "L2", {"ChargingScheduleAllowedChargingRateUnit": "Power"}),
    ("c201-w", "ocpp2.0.1", "L1-L2-L3", {"RateUnit": "W"}),
    ("c201-sl0", "ocpp2.0.1", "L1", {"ProfileStackLevel": "0"}),
]
PAUSED = "c16-a"


def _seen_at(at: datetime, sims: dict[str, SimChargePoint], log: str) -> str:
    """What each charger held and drew around an instant, and the last gateway's log: to read a failure by."""
    lines = []
    for cid, sim in sims.items():
        steps = [f"{t.time().isoformat()} {sim.limit_at(t)}/{sim.draw_at(t):g}"
                 for t in sim.breakpoints(at - timedelta(seconds=3), at + timedelta(seconds=1))]
        lines.append(f"{cid}: limit/draw {steps}")
    return "\n" + "\n".join(lines) + "\nthe last gateway's log:\n" + "\n".join(log.splitlines()[-80:])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def write_config(tmp_path: Path, ocpp_port: int, first: str | None = None) -> Path:
    """The site; `first`: a charger given priority over the others (a config changed across a restart)."""
    lines = [
        "[site]", 'wiring = "three-phase-400/230"', "service_breaker_a = 100", "",
        # every charger on one feeder: 40 A usable per conductor against 4 × 32 A of chargers on each
        "[[circuits]]", 'id = "feeder"', "breaker_a = 50", "",
    ]
    for cid, protocol, phases, _ in CHARGERS:
        lines += ["[[chargers]]", f'id = "{cid}"', f'protocol = "{protocol}"', f'phases = "{phases}"',
                  'circuit = "feeder"', "max_a = 32", "fallback_a = 6", f"priority = {int(cid == first)}", ""]
    lines += [
        "[ocpp]", f"port = {ocpp_port}", f"lease_s = {LEASE_S}", "meter_interval_s = 1", "ack_wait_s = 1",
        "response_timeout_s = 2", "",
        "[control]", "tick_s = 0.25", "",
        "[status]", "port = 0", f'token = "{TOKEN}"', "",
        "[store]", f'path = "{tmp_path / "gw.sqlite"}"', "",
    ]
    path = tmp_path / "site.toml"
    path.write_text("\n".join(lines))
    return path


async def call(url: str, method: str = "GET", body: dict[str, Any] | None = None) -> Any:
    def fetch() -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method,
                                         headers={"Authorization": f"Bearer {TOKEN}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return json.load(response)

    return await asyncio.to_thread(fetch)


async def settled(url: str, sims: dict[str, SimChargePoint], timeout_s: float = 15.0) -> dict[str, Any]:
    """Wait until every charger's acknowledged limit is the one it holds; return the status then."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    last: dict[str, Any] = {}
    while loop.time() < deadline:
        last = await call(url + "api/status")
        good = True
        for evse in last["evses"]:
            held = sims[evse["id"]].limit_a()
            if not evse["acknowledged"] or evse["limit_a"] is None or held is None \
                    or abs(held - evse["limit_a"]) > 0.15:
                good = False
        if good:
            return last
        await asyncio.sleep(0.25)
    detail = {e["id"]: (e["limit_a"], e["acknowledged"], sims[e["id"]].limit_a()) for e in last.get("evses", [])}
    raise AssertionError(f"the gateway's acknowledged limits never matched the chargers': {detail}")


def charging(sims: dict[str, SimChargePoint]) -> set[str]:
    return {cid for cid, sim in sims.items() if sim.draw_a() > 0}


async def test_a_mixed_site_stays_under_every_limit_through_restarts(tmp_path: Path) -> None:
    port = free_port()
    config_path = write_config(tmp_path, port)
    config = load_config(config_path)
    base = f"ws://127.0.0.1:{port}/ocpp"
    sims = {
        cid: SimChargePoint(base, cid, version=protocol.removeprefix("ocpp"),  # type: ignore[arg-type]
                            ev=Ev(max_a=32), phases=3 if phases.count("-") == 2 else 1, meter_interval_s=1,
                            quirks=Quirks(boot_on_reconnect=False, reports=dict(reports)))
        for cid, protocol, phases, reports in CHARGERS
    }
    start = datetime.now(UTC)
    marks: dict[str, str] = {}  # when each step began, to read a failure against
    gateway = Gateway(config_path)
    try:
        url = await gateway.status_url()
        # boot of the whole site, then every EV plugs in
        await asyncio.gather(*(s.start(timeout_s=10) for s in sims.values()))
        for sim in sims.values():
            await sim.plug_in()
        await until(lambda: charging(sims) == set(sims), 15, "not every EV got to charge")
        await settled(url, sims)

        # the operator caps the site and pauses one charger
        marks["the operator caps the site and"] = datetime.now(UTC).time().isoformat()
        await call(url + "api/cap", "POST", {"kw": CAP_KW})
        cap_from = datetime.now(UTC) + timedelta(seconds=3)  # the time the cap may take to be in force
        await call(url + f"api/evses/{PAUSED}/pause", "POST", {})
        # the pause is acted on at the next decision: until then every acknowledged limit may already
        # match the one held, and `settled` would return before it
        await until(lambda: sims[PAUSED].limit_a() == 0.0, 5, "the paused charger was not set to 0 A")
        status = await settled(url, sims)
        assert sims[PAUSED].draw_a() == 0.0
        assert status["operator"]["cap_kw"] == CAP_KW and status["operator"]["paused"] == [PAUSED]

        # a reconnect wave: every charger loses its link at once
        marks["a reconnect wave"] = datetime.now(UTC).time().isoformat()
        await asyncio.gather(*(s.drop() for s in sims.values()))
        await asyncio.sleep(0.5)
        await until(lambda: all(s.connected.is_set() for s in sims.values()), 10, "chargers did not reconnect")
        await settled(url, sims)

        # SIGKILL and immediate restart, inside the lease
        marks["SIGKILL and immediate restart,"] = datetime.now(UTC).time().isoformat()
        before = charging(sims)
        gateway.kill()
        killed = datetime.now(UTC)
        gateway = Gateway(config_path)
        url = await gateway.status_url()
        status = await settled(url, sims)
        restarted = datetime.now(UTC)
        assert status["operator"]["cap_kw"] == CAP_KW and status["operator"]["paused"] == [PAUSED]
        for cid in before:
            assert not zero_spans(sims[cid], killed, restarted), f"{cid} was set to 0 A by the restart"
        assert sims[PAUSED].draw_a() == 0.0

        # SIGKILL and restart at once with a changed config: one charger now comes first, so the others
        # give up room it takes; they must have let go before it is raised (decreases acknowledged first,
        # judged against what each holds on its lease, not against the nothing a new process remembers)
        gateway.kill()
        write_config(tmp_path, port, first="c201-a")
        gateway = Gateway(config_path)
        url = await gateway.status_url()
        await until(lambda: sims["c201-a"].limit_a() == 32.0, 10, "the charger put first was not raised")
        await settled(url, sims)

        # SIGKILL, the leases run out (the chargers fall back by themselves), then a restart
        marks["SIGKILL, the leases run out (t"] = datetime.now(UTC).time().isoformat()
        gateway.kill()

        await asyncio.sleep(LEASE_S + 1.0)
        # on their fallbacks now, lowered while the cap is in force (never above a charger's limit): the
        # paused one stays off
        fallbacks = {c: s.limit_a() for c, s in sims.items()}
        assert all(a is not None and a <= 6.0 for a in fallbacks.values()) and fallbacks[PAUSED] == 0.0, fallbacks
        gateway = Gateway(config_path)
        url = await gateway.status_url()
        await settled(url, sims)
        assert sims[PAUSED].draw_a() == 0.0

        # a clean stop: every charger on its fallback at once
        marks["a clean stop"] = datetime.now(UTC).time().isoformat()
        text = await gateway.terminate()
        assert "Traceback" not in text
        fallbacks = {c: s.limit_a() for c, s in sims.items()}
        assert all(a is not None and a <= 6.0 for a in fallbacks.values()) and fallbacks[PAUSED] == 0.0, fallbacks
    except BaseException:
        print(gateway.text()[-12000:])  # the gateway's side of the story, shown with the failure
        raise
    finally:
        last_log = gateway.text()  # the last process's side, for a failure of the checks below
        gateway.close()
        await asyncio.gather(*(s.stop() for s in sims.values()))
    end = datetime.now(UTC)

    # the cap holds from when it took effect to the end, the gateway dead or alive: the chargers'
    # fallbacks were lowered under it, so any mix of leases and fallbacks keeps it
    found = overloads(config, sims, start, end, [(cap_from, end, CAP_KW)])
    assert not found, ("\n".join(str(o) for o in found[:20]) + f"\nphases: {marks}"
                       + _seen_at(found[0].at, sims, last_log))
    rejected = {cid: s.rejections for cid, s in sims.items() if s.rejections}
    assert not rejected, rejected
