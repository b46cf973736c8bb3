"""A site for the store's fault tests: three simulated Modbus chargers with a car each behind a simulated
service meter, sampled from the chargers' side, the gateway's configuration for it, and the checks that
it keeps under its limit through a fault."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from gateway.config import load_config
from gateway.runtime.loop import Runtime
from gateway.sim.modbus_charger import SimCharger
from gateway.sim.modbus_meter import SimMeter
from gateway.sim.vtn import SimVtn
from support.waiting import until

BREAKER_A = 80.0
LIMIT_A = 64.0  # 80 % of the breaker: the continuous limit the gateway holds the site under
HOUSE_A = 15.0
STEP_A = 30.0  # the house steps to this: 30 A + what the cars took (49 A) is over the limit, under the breaker
RECOVER_S = 2.0  # the longest the site may stay over its limit after the step (measured: 0.05-0.15 s)
TOKEN = "fault-test-token-0123456789"
PHASES = ("L1", "L2", "L3")


@dataclass
class SimSite:
    """Three 32 A Modbus chargers with a car each and a meter at the service that reads the house plus what
    the cars draw; `watch()` samples every conductor from the chargers' side."""

    chargers: list[SimCharger]
    meter: SimMeter
    house_a: float = HOUSE_A
    samples: list[tuple[float, float]] = field(default_factory=list)  # (monotonic, highest phase amps)

    def site_a(self) -> float:
        return self.house_a + sum(c.drawing_a for c in self.chargers)

    def ev_kw(self) -> float:
        return sum(c.drawing_a for c in self.chargers) * 3 * 230.0 / 1000.0

    async def watch(self) -> None:
        while True:
            amps = self.site_a()
            self.meter.set_load(**dict.fromkeys(PHASES, amps))
            self.samples.append((time.monotonic(), amps))
            await asyncio.sleep(0.05)

    def since(self, t0: float) -> list[tuple[float, float]]:
        return [(t, a) for t, a in list(self.samples) if t >= t0]

    def longest_over(self, t0: float, limit: float = LIMIT_A) -> float:
        """The longest run of samples over `limit` since `t0`, in seconds."""
        longest, began = 0.0, None
        for t, amps in self.since(t0):
            if amps > limit + 0.01:
                began = t if began is None else began
                longest = max(longest, t - began)
            else:
                began = None
        return longest

    def peak(self, t0: float) -> float:
        return max((a for _, a in self.since(t0)), default=0.0)


@contextmanager
def site_config_lines(site: SimSite, store: Path, vtn: SimVtn | None = None) -> Iterator[list[str]]:
    lines = ["[site]", 'wiring = "three-phase-400/230"', f"service_breaker_a = {BREAKER_A:g}", ""]
    for i, charger in enumerate(site.chargers):
        lines += ["[[chargers]]", f'id = "mb-{i}"', 'protocol = "modbus"', 'phases = "L1-L2-L3"', "max_a = 32",
                  "fallback_a = 6",
                  f'modbus = {{ model = "generic-charger", host = "127.0.0.1", port = {charger.port} }}', ""]
    lines += ["[[meters]]", 'id = "grid"', "poll_s = 0.25", "stale_after_s = 5",
              f'modbus = {{ model = "eastron-sdm630", host = "127.0.0.1", port = {site.meter.port} }}', "",
              "[control]", "tick_s = 0.25", "min_on_time_s = 0", "charger_stale_s = 10", "",
              "[status]", "port = 0", f'token = "{TOKEN}"', "",
              "[store]", f'path = "{store}"', ""]
    if vtn is not None:
        lines += ["[vtn]", f'url = "{vtn.url}"', 'ven_name = "fault-ven"', "allow_plain_http = true", "poll_s = 1",
                  "backoff_initial_s = 0.2", "backoff_max_s = 1", ""]
    yield lines


@contextlib.asynccontextmanager
async def sim_site() -> AsyncIterator[SimSite]:
    """The site running; a test module's `site` fixture enters it."""
    chargers = [SimCharger("generic-charger", rating_a=32.0) for _ in range(3)]
    for c in chargers:
        await c.start()
    meter = SimMeter("eastron-sdm630")
    await meter.start()
    s = SimSite(chargers, meter)
    watcher = asyncio.create_task(s.watch())
    try:
        yield s
    finally:
        watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await watcher
        for c in chargers:
            await c.stop()
        await meter.stop()


async def http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, str]:
    def call() -> tuple[int, str]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(url, data=data, method=method, headers={
            "Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    return await asyncio.to_thread(call)


async def alarm_everywhere(url: str, key: str) -> dict[str, Any]:
    """The alarm `key` as /api/status, /healthz and /metrics show it."""
    _, status = await http("GET", url + "api/status")
    (alarm,) = [a for a in json.loads(status)["alarms"] if a["key"] == key]
    assert isinstance(alarm, dict)
    code, health = await http("GET", url + "healthz")
    _, metrics = await http("GET", url + "metrics")
    assert f'gateway_alarm{{key="{key}"' in metrics, metrics
    assert key in health
    alarm["healthz"] = code
    return alarm


def stored_rows(store: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(f"file:{store}?mode=ro", uri=True, timeout=10)
    try:
        return conn.execute(sql, params).fetchall()
    finally:
        conn.close()


async def start_runtime(tmp_path: Path, lines: list[str]) -> tuple[Runtime, asyncio.Task[None], str]:
    config = tmp_path / "site.toml"
    config.write_text("\n".join(lines))
    runtime = Runtime(load_config(config))
    task = asyncio.create_task(runtime.run())
    await asyncio.wait_for(runtime.started.wait(), 10)
    assert runtime.status_url is not None
    return runtime, task, runtime.status_url


async def settled(site: SimSite) -> None:
    """The cars plug in once the gateway has taken the chargers over (a charger that has never been given a
    setpoint runs at its rating), and share what the house leaves (64 - 15 = 49 A), as the chargers see it."""
    await until(lambda: all(c.setpoint_a is not None for c in site.chargers), 15, "the chargers were not taken over")
    for c in site.chargers:
        c.plug_in(ev_max_a=32.0, phases=3)
    await until(lambda: 58.0 <= site.site_a() <= LIMIT_A, 15, "the site never settled under its limit")
    await asyncio.sleep(1.0)
    assert 58.0 <= site.site_a() <= LIMIT_A


def alarm_lines(caplog: pytest.LogCaptureFixture, key: str) -> tuple[int, int]:
    raised = [r for r in caplog.records if r.getMessage().startswith(f"alarm raised key={key} ")]
    cleared = [r for r in caplog.records if r.getMessage().startswith(f"alarm cleared key={key} ")]
    return len(raised), len(cleared)


def no_tracebacks(caplog: pytest.LogCaptureFixture) -> None:
    noisy = [r.getMessage() for r in caplog.records if r.exc_info or "decision failed" in r.getMessage()]
    assert not noisy, noisy


async def house_step_holds(site: SimSite) -> None:
    """Step the house up and check the site from the chargers' side: under the breaker at every instant and
    back under its limit within RECOVER_S."""
    t0 = time.monotonic()
    site.house_a = STEP_A
    await asyncio.sleep(RECOVER_S + 2.0)
    print(f"house step: peak {site.peak(t0):.1f} A, over {LIMIT_A:g} A for {site.longest_over(t0):.2f} s")
    assert site.peak(t0) <= BREAKER_A, f"over the breaker: {site.peak(t0):.1f} A"
    assert site.longest_over(t0) <= RECOVER_S, f"over the {LIMIT_A:g} A limit for {site.longest_over(t0):.1f} s"
    assert site.site_a() <= LIMIT_A + 0.01
