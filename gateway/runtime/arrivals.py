"""What arrives from the field: a charger's reading or a meter's poll, judged (the meter check) and kept in
the site state, and a decision triggered when it matters (a plug-in, a meter over its circuit's limit)."""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

from gateway.domain import ChargerReading, ChargerStatus, Measurement
from gateway.runtime.decide import MeterReading

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")


def on_reading(rt: Runtime, reading: ChargerReading) -> None:
    reading, before = rt.state.observe(reading)
    rt.recorder.observe(reading)
    if reading.charger_id in rt.unacked and reading.applied_limit_a is not None:
        mem = rt.memory.get(reading.charger_id)
        if mem is not None and reading.applied_limit_a <= mem.limit_a + 0.5:
            del rt.unacked[reading.charger_id]
    came_online = (before is None or before.status is ChargerStatus.OFFLINE) and (
        reading.status is not ChargerStatus.OFFLINE)
    if came_online and reading.charger_id in rt.unacked:
        # It refused the limit only because it was away: send it again now, not at the next resend.
        rt.unacked[reading.charger_id] = datetime.min.replace(tzinfo=UTC)
        rt.trigger(f"charger={reading.charger_id} online")
    if before is None or before.status.connected != reading.status.connected:
        rt.trigger(f"charger={reading.charger_id} status={reading.status.value}")


def on_measurement(rt: Runtime, m: Measurement, *, at: float | None = None, values: tuple[float, ...] = ()) -> None:
    """A good reading of a meter; `at` the monotonic time of its poll, `values` every number it read
    (for the frozen check). It is judged against what the chargers behind it report drawing."""
    from gateway.runtime.meter_check import Poll

    rt.measurements[m.meter_id] = m
    now = rt.clock()
    ev = rt.meter_watch.ev_draw(m.meter_id, rt.readings, now)
    poll = Poll(time.monotonic() if at is None else at, m.current_a, ev, values)
    state = rt.meter_watch.observe(m.meter_id, poll, now)
    if state.started is not None:
        rt.trigger(f"meter={m.meter_id} {state.started.kind}")
    circuit = rt.circuit_limit.get(rt.meter_circuit.get(m.meter_id, ""))
    if circuit is not None and any(a > circuit.limit_of(p) for p, a in m.current_a.items()):
        rt.trigger(f"meter={m.meter_id} over the limit of {circuit.id}")


def meter_readings(rt: Runtime) -> dict[str, MeterReading]:
    out = {}
    now = rt.clock()
    for meter_id, m in rt.measurements.items():
        meter = rt.meters.get(meter_id)
        # Over a minute (what the meter keeps), not only `stale_after_s`: at the moment a meter turns
        # stale its last `stale_after_s` hold no good poll, and the worst before it is what counts.
        worst = meter.worst_recent_a(window_s=max(60.0, meter.stale_after_s)) if meter is not None else {}
        measured_at = m.at
        age = meter.age_s() if meter is not None else None
        if age is not None:
            # Its age by the monotonic clock: a step of the wall clock must not make an old reading
            # look fresh (backwards) nor a fresh one stale-but-believed (forwards).
            measured_at = now - timedelta(seconds=max(0.0, age))
        out[meter_id] = rt.meter_watch.reading(MeterReading(meter_id, m.current_a, measured_at, worst))
    return out
