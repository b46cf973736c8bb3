"""Helpers the test modules share: polling, the `gateway run` subprocess, OCPP and allocation fixtures,
fault sites, the simulated XML VTN and the conductor check. Test modules import from here, never from
one another."""
