"""What the runtime counts as it goes (decisions and how long they take, limit pushes by result and their
round trip), as Prometheus counters and histograms in a registry of the runtime's own: several gateways
in one process (tests) never share a series. The status endpoint's `/metrics` serves this registry beside
the gauges it computes from the status document at scrape time.

The runtime calls `decided(seconds)` after each decision and `pushed(protocol, accepted, round_trip_s)`
once per limit acknowledgement (or refusal). Counts kept by the adapters themselves (VTN polls, Modbus
errors, adapter restarts) are read from them at scrape time by the status endpoint, not fed here.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from gateway.runtime.drivers import BUILDERS

disable_created_metrics()  # type: ignore[no-untyped-call]  # no `_created` series beside every counter: noise on a dashboard of 100s of sites

# A decision takes a few milliseconds (5-10 ms at 1,000 chargers): buckets from 0.5 ms to 1 s.
DECISION_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0)
# A push is a round trip to a charger: LAN Modbus in milliseconds, OCPP over a cellular modem in seconds.
PUSH_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


class Counters:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.decisions = Counter("gateway_decisions", "Decisions made since the process started",
                                 registry=self.registry)
        self.decision_seconds = Histogram("gateway_decision_duration_seconds",
                                          "Time to make one decision (not to push it)",
                                          buckets=DECISION_BUCKETS, registry=self.registry)
        self.pushes = Counter("gateway_limit_pushes", "Limits pushed to chargers, by protocol and result "
                              "(accepted, refused: refused or not answered)", ["protocol", "result"],
                              registry=self.registry)
        self.push_seconds = Histogram("gateway_limit_push_round_trip_seconds",
                                      "Round trip of one limit push to a charger, answered ones only",
                                      ["protocol"], buckets=PUSH_BUCKETS, registry=self.registry)
        for protocol in BUILDERS:  # every driver family at 0 from the start: rate() needs a first sample
            for result in ("accepted", "refused"):
                self.pushes.labels(protocol, result)
            self.push_seconds.labels(protocol)

    def decided(self, seconds: float) -> None:
        self.decisions.inc()
        self.decision_seconds.observe(max(0.0, seconds))

    def pushed(self, protocol: str, accepted: bool, round_trip_s: float) -> None:
        self.pushes.labels(protocol, "accepted" if accepted else "refused").inc()
        if accepted or round_trip_s > 0:
            self.push_seconds.labels(protocol).observe(max(0.0, round_trip_s))
