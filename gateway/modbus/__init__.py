"""Modbus TCP chargers and site meters: register maps as data, one owner per link, a driver and a poller.

`maps` loads and validates the register-map files (one per device model, shipped in `maps/*.toml` or
written by a user), `codec` turns registers into values and back, `link` owns one TCP connection and
serialises every call on it, `charger` implements `gateway.ports.EvseDriver`, `meter` implements
`gateway.ports.Meter`, and `image` serves a map's registers for the simulators in `gateway.sim`.
"""
