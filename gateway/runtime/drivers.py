"""Charger drivers by protocol family: which adapter serves a charger, and how it is built from the config.

The runtime knows charger protocols only through this registry: it groups the config's chargers by
`family(protocol)`, builds one driver per family with the builder registered here, and from then on
speaks to each through `EvseDriver` and the capability protocols of `gateway.ports` (release on stop,
hand-back, fallbacks, clock, store). Adding a charger protocol is one adapter package plus one entry in
`BUILDERS`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.assembly import ocpp_watts_per_amp
from gateway.ports import EvseDriver

if TYPE_CHECKING:
    from gateway.config import GatewayConfig
    from gateway.config.site import ChargerSection
    from gateway.modbus.link import LinkPool


@dataclass(frozen=True, slots=True)
class DriverContext:
    """What a builder may use besides its chargers: the config, the clock, where relative paths start,
    the store's file and the Modbus link pool (one owner per link, shared with the meters)."""

    config: GatewayConfig
    clock: Callable[[], datetime]
    base: Path | None
    store_path: Path
    pool: LinkPool | None


Builder = Callable[[DriverContext, Sequence["ChargerSection"]], EvseDriver]


def family(protocol: str) -> str:
    """The driver family of a charger protocol: `ocpp1.6` and `ocpp2.0.1` share one central system."""
    return "ocpp" if protocol.startswith("ocpp") else protocol


def build_ocpp(ctx: DriverContext, chargers: Sequence[ChargerSection]) -> EvseDriver:
    from gateway.ocpp.driver import OcppDriver
    from gateway.store.chargers import ChargerBook

    # What each charger holds, kept across restarts: a raise is written there before it is sent.
    book = ChargerBook.open(ctx.store_path)
    return OcppDriver(ctx.config.ocpp, ctx.config.chargers, ocpp_watts_per_amp(ctx.config), clock=ctx.clock,
                      book=book, owns_book=True)


def build_modbus(ctx: DriverContext, chargers: Sequence[ChargerSection]) -> EvseDriver:
    from gateway.modbus.charger import ModbusChargers

    assert ctx.pool is not None, "the runtime makes the link pool when a Modbus charger is configured"
    return ModbusChargers.from_config(list(chargers), ctx.pool, ctx.base,
                                      poll_s=min(1.0, ctx.config.control.tick_s))


BUILDERS: dict[str, Builder] = {
    "ocpp": build_ocpp,
    "modbus": build_modbus,
}


def needs_pool(config: GatewayConfig) -> bool:
    """A Modbus link pool is needed for Modbus chargers or any meter."""
    return bool(config.meters) or bool(config.pv.inverters) or any(family(c.protocol) == "modbus"
                                                                   for c in config.chargers)
