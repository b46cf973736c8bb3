"""Simulated peers (VTN, OCPP charge points, Modbus chargers and meters) for the demo, tests and benchmarks."""
