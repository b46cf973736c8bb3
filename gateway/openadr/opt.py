"""Opt in or out of an event: pure rules from the site config, then the operator's override on top.

A VEN complies unless it opts out. We opt out when the event is not for us (targets), belongs to a
program we are not enrolled in (market context), or would leave the EVs less power than the configured
critical chargers need. An operator override (set through the status endpoint by the runtime) wins over
every rule; test events are answered optIn and are never acted on anyway.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.domain import Event, OptState, SignalName, SignalType
from gateway.openadr.settings import OpenAdrSettings


@dataclass(frozen=True, slots=True)
class OptDecision:
    opt: OptState
    reason: str


def lowest_ev_kw(event: Event, config: OpenAdrSettings) -> float | None:
    """The least EV power any interval of the event would leave, where the signal says it (prices do not).

    Fractions and offsets are of `ev_capacity_kw`; without it only the absolute setpoints can be judged. A
    LOAD_DISPATCH setpoint limits the whole site, so the EVs get at most that much.
    """
    capacity = config.ev_capacity_kw
    lows: list[float] = []
    for signal in event.signals:
        for interval in signal.intervals:
            v = interval.value
            kind = signal.type
            absolute: float | None = None
            fraction: float | None = None
            if kind in (SignalType.LEVEL, SignalType.X_LOAD_CONTROL_LEVEL_OFFSET):
                fraction = config.simple_levels.get(str(min(3, max(0, round(v)))), 1.0)
            elif kind is SignalType.X_LOAD_CONTROL_CAPACITY:
                fraction = v
            elif kind is SignalType.X_LOAD_CONTROL_PERCENT_OFFSET:
                fraction = 1.0 + v / 100.0
            elif kind is SignalType.X_LOAD_CONTROL_SETPOINT:
                absolute = v
            elif signal.name is SignalName.LOAD_DISPATCH:
                if kind is SignalType.SETPOINT:
                    absolute = v
                elif kind is SignalType.MULTIPLIER:
                    fraction = v
                elif kind is SignalType.DELTA and v < 0 and capacity is not None:
                    absolute = capacity + v
            if absolute is not None:
                lows.append(max(0.0, absolute))
            elif fraction is not None and capacity is not None:
                lows.append(capacity * min(1.0, max(0.0, fraction)))
    return min(lows) if lows else None


def decide(
    event: Event,
    config: OpenAdrSettings,
    *,
    targeted: bool = True,
    override: tuple[OptState, str] | None = None,
) -> OptDecision:
    if override is not None:
        return OptDecision(override[0], f"operator: {override[1]}" if override[1] else "operator override")
    if event.test_event:
        return OptDecision(OptState.OPT_IN, "test event (acknowledged, not acted on)")
    if not targeted:
        return OptDecision(OptState.OPT_OUT, "targets none of our resources")
    if config.market_contexts and event.market_context not in config.market_contexts:
        return OptDecision(OptState.OPT_OUT, f"not enrolled in program {event.market_context!r}")
    if config.critical_kw > 0:
        low = lowest_ev_kw(event, config)
        if low is not None and low < config.critical_kw:
            return OptDecision(
                OptState.OPT_OUT, f"would leave {low:.1f} kW, critical chargers need {config.critical_kw:.1f} kW"
            )
    return OptDecision(OptState.OPT_IN, "site can comply")

