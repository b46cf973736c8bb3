"""OCPP test helpers: the driver's settings and a charger's section as the tests write them, the URL the
simulated charge points dial, and a collector of the readings the driver publishes."""

from __future__ import annotations

import asyncio

from gateway.config.ocpp import OcppSection
from gateway.config.site import ChargerSection
from gateway.domain import ChargerReading
from gateway.ocpp import OcppDriver

PASSWORD = "correct-horse-1"


def section(**over: object) -> OcppSection:
    values: dict[str, object] = {"port": 0, "lease_s": 2.0, "meter_interval_s": 1, "ack_wait_s": 2.0,
                                 "response_timeout_s": 2.0}
    values.update(over)
    return OcppSection.model_validate(values)


def charger(cid: str, protocol: str = "ocpp1.6", **over: object) -> ChargerSection:
    values: dict[str, object] = {"id": cid, "protocol": protocol, "phases": "L1-L2-L3", "max_a": 32,
                                 "fallback_a": 8, "ocpp": {"password": PASSWORD}}
    values.update(over)
    return ChargerSection.model_validate(values)


def collect_readings(driver: OcppDriver) -> tuple[list[ChargerReading], asyncio.Task[None]]:
    """Every reading the driver publishes, appended to a list by a task that the caller cancels."""
    seen: list[ChargerReading] = []

    async def collect() -> None:
        async for reading in driver.readings():
            seen.append(reading)

    return seen, asyncio.create_task(collect())


def base_url(driver: OcppDriver) -> str:
    return f"ws://127.0.0.1:{driver.server.port}/ocpp"
