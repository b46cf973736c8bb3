"""The OCPP central system: one websocket server for 1.6J and 2.0.1 chargers and the `EvseDriver` over it.

`OcppDriver(section, chargers, watts_per_amp)` (built by the runtime's driver registry) is what the runtime
wires; the rest of the package is split by concern: `server` (connections), `control` (one charger's
limits and pushes), `cp16` / `cp201` (per-version handlers), `profiles` (what we send), `state` (what
they report), `link` (the seam between handlers and driver).
"""

from gateway.ocpp.control import LimitRecord
from gateway.ocpp.driver import OcppDriver
from gateway.ocpp.server import OcppSetupError
from gateway.ocpp.state import ChargerIdentity

__all__ = ["ChargerIdentity", "LimitRecord", "OcppDriver", "OcppSetupError"]
