"""The runtime's wiring: from the config, open the store, the charger drivers (by protocol family,
`runtime.drivers`), the meters, the solar reader, the VEN and the status endpoint; the supervised tasks that
run them; and the clean stop (release the chargers, close the links and the store)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from gateway.allocate import kept_fallbacks
from gateway.ports import (
    Closes,
    EvseDriver,
    Releases,
    Snapshots,
    Starts,
)
from gateway.runtime import control
from gateway.runtime.drivers import BUILDERS, DriverContext, family, needs_pool
from gateway.runtime.logs import QuietLibraries
from gateway.runtime.supervise import supervised
from gateway.waking import within

if TYPE_CHECKING:
    from gateway.config.site import ChargerSection
    from gateway.modbus.meter import ModbusMeter
    from gateway.runtime.loop import Runtime

log = logging.getLogger("gateway.runtime")


async def open_parts(rt: Runtime) -> None:
    path = rt._path(rt.config.store.path)
    recorder = rt.recorder
    await recorder.open()  # a damaged file is refused (StoreDamaged), not half-used
    assert recorder.ledger is not None and recorder.operator is not None and recorder.vtn is not None
    rt.operator.attach(recorder.operator, recorder.writer, recorder.health)
    # A session that was charging when the gateway stopped goes on: what it has had counts from its start
    # as the ledger saw it, not from the first reading after the restart (else it would be owed it twice).
    for cid, session in (await asyncio.to_thread(recorder.ledger.open_sessions)).items():
        if session.meter_start_kwh is not None:
            rt.session_start_kwh[cid] = (session.session_id, session.meter_start_kwh)
    rt.operator.restore(await asyncio.to_thread(recorder.operator.load, rt.clock(),
                                                  frozenset(rt.protocol_of)))
    rt.solar.restore(rt.operator.modes)  # charge modes set by hand before the restart
    rt.events = await asyncio.to_thread(recorder.vtn.events)
    rt.boundaries.start()
    if needs_pool(rt.config):
        from gateway.modbus.link import LinkPool

        rt.pool = LinkPool()
    context = DriverContext(rt.config, rt.clock, rt.base, path, rt.pool)
    families: dict[str, list[ChargerSection]] = {}
    for charger in rt.config.chargers:
        families.setdefault(family(charger.protocol), []).append(charger)
    for name, chargers in families.items():
        driver = BUILDERS[name](context, chargers)
        rt.drivers[name] = driver
        if isinstance(driver, Snapshots):
            # Known before the first decision: what each charger may still draw on what it holds (its
            # lease from the store), not "never heard from" while its reader task has yet to start.
            for reading in driver.snapshot():
                rt.readings[reading.charger_id] = reading
        if isinstance(driver, Starts):
            await driver.start()
    for section in rt.config.meters:
        from gateway.modbus.meter import ModbusMeter

        assert rt.pool is not None
        rt.meters[section.id] = ModbusMeter.from_config(section, rt.pool, rt.base)
    rt.solar.open(rt.pool)
    if rt.config.vtn is not None and rt.config.vtn.protocol == "3":
        from gateway.assembly import oadr3_settings
        from gateway.openadr3.ven import Oadr3Ven
        from gateway.store.vtn3 import Oadr3Store

        currency = rt.plans.tariff.currency if rt.plans.tariff is not None else None
        rt.ven = Oadr3Ven(oadr3_settings(rt.config, currency), Oadr3Store.open(path, health=recorder.health),
                            sink=rt, telemetry=rt, clock=rt.clock)
    elif rt.config.vtn is not None:
        from gateway.openadr.ven import Ven

        rt.ven = Ven(rt.config.vtn, rt.config.openadr, recorder.vtn, sink=rt, telemetry=rt,
                       charger_ids=[c.id for c in rt.config.chargers], clock=rt.clock,
                       # a configured tariff's currency: a VTN price in another one is refused, not mixed
                       currency=rt.plans.tariff.currency if rt.plans.tariff is not None else None)
    if rt.serve_status:
        from gateway.status.app import serve

        status = rt.config.status
        rt.recent_log.addFilter(QuietLibraries(logging.WARNING))
        logging.getLogger().addHandler(rt.recent_log)
        rt._status_runner, port = await serve(rt, status.bind, status.port, token=status.token,
                                                operator=rt)
        host = f"[{status.bind}]" if ":" in status.bind else status.bind
        rt.status_url = f"http://{host}:{port}/"
        log.info("status endpoint url=%s", rt.status_url)


def tasks_of(rt: Runtime) -> list[tuple[str, Any]]:
    tasks: list[tuple[str, Any]] = [("decide", control.decide_forever(rt))]
    for name, driver in rt.drivers.items():
        tasks.append((name, supervised(f"{name}-chargers" if name != "ocpp" else "ocpp-readings",
                                       functools.partial(read_chargers, rt, driver), restarts=rt.restarts)))
    for meter_id, meter in rt.meters.items():
        tasks.append((f"meter-{meter_id}", supervised(f"meter-{meter_id}", meter_reader(rt, meter),
                                                      restarts=rt.restarts)))
    tasks += rt.solar.tasks(rt.restarts)
    ven = rt.ven
    if ven is not None:
        tasks.append(("ven", supervised("openadr-ven", ven.run, restarts=rt.restarts)))
    return tasks


async def close_parts(rt: Runtime) -> None:
    rt.boundaries.stop()
    if rt._status_runner is not None:
        with contextlib.suppress(Exception):
            await rt._status_runner.cleanup()
    logging.getLogger().removeHandler(rt.recent_log)
    for releasing in [d for d in rt.drivers.values() if isinstance(d, Releases)]:
        await release(rt, releasing)
    for closing in [d for d in rt.drivers.values() if isinstance(d, Closes)]:
        with contextlib.suppress(Exception):  # their watchdogs take over
            await closing.close()
    if rt.pool is not None:
        with contextlib.suppress(Exception):
            await rt.pool.close()
    await rt.recorder.close()


def at_rest(rt: Runtime) -> dict[str, float]:
    """What each charger may fall back to once no limit is live anywhere: its configured fallback (the
    chargers' fallbacks together fit every circuit: check-config), or, while the site is curtailed (a DR
    event, an operator cap, a demand peak target), what the limits in force leave room for; 0 A for one an
    operator paused. Nothing when nothing was decided yet (the bases are as configured)."""
    last = rt.last
    if last is None or last.problem is None:
        return {}
    paused = rt.paused
    if any(v is not None for v in (last.site_limit_kw, last.ev_limit_kw, last.peak_kw)):
        return kept_fallbacks(last.problem, {}, off=paused)
    return {e.id: 0.0 if e.id in paused else e.fallback_a for e in last.problem.evses if e.held_a is None}


async def release(rt: Runtime, releasing: Releases) -> None:
    """A clean stop: every charger on its own fallback now, rather than when its lease runs out."""
    try:
        kept = await within(releasing.stop(release=True, at_rest=at_rest(rt)), 10.0)
    except Exception as exc:  # a shutdown goes on; what it could not do is said
        log.warning("shutdown: chargers not released (%s): they fall back by themselves when their "
                    "leases end", str(exc) or type(exc).__name__)
        return
    if kept:
        log.warning("shutdown: %d charger(s) did not confirm going to their fallback (%s): they fall "
                    "back by themselves when their leases end", len(kept), ", ".join(kept[:10]))
    else:
        log.info("shutdown: live limits cleared; chargers on their fallback")


async def read_chargers(rt: Runtime, driver: EvseDriver | None) -> None:
    assert driver is not None
    async for reading in driver.readings():
        rt.on_reading(reading)


def meter_reader(rt: Runtime, meter: ModbusMeter) -> Callable[[], Any]:
    from gateway.runtime.meter_check import Poll

    meter.report_values = False  # refused values are the meter check's alarm: one line, not two

    async def read() -> None:
        async for poll in meter.polls():
            if poll.measurement is not None:
                rt.on_measurement(poll.measurement, at=poll.at, values=poll.values)
            elif poll.rejected is not None:  # NaN, 1e9 A: a fault at once, not a last good reading aging
                now = rt.clock()
                ev = rt.meter_watch.ev_draw(meter.id, rt.readings, now)
                state = rt.meter_watch.observe(meter.id, Poll(poll.at, {}, ev, poll.values, poll.rejected), now)
                if state.started is not None:
                    rt.trigger(f"meter={meter.id} {state.started.kind}")

    return read
