"""The runtime: the pure decision step, the supervising control loop and the wiring of the adapters."""
