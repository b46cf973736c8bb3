"""The commissioning checklist run against a real installation: the gateway's own `Runtime` for the
configured site (a scratch store, no VTN, no status page) and, in order: every OCPP charger dialling in
(and what its BootNotification says it is), every Modbus charger and meter answering, each charger's
fail-safe settings (the OCPP base profile and lease; the Modbus fail-safe registers, read back), each
charger stepped in turn down to the step current and back with the gateway's decisions held meanwhile
(how long each step takes to show in the charger's measured current and on the meter it is behind), and
last the site limit lowered (an operator cap) for a while with the measured site load watched under it.
Progress goes to the caller's `progress`; the results are `gateway.commissioning.results` records.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from gateway.clock import utc_now
from gateway.ports import Commissions, Listens

if TYPE_CHECKING:
    from gateway.commissioning.results import (
        ChargerResult,
        Check,
        Identity,
        MeterResult,
        PeakResult,
        Report,
        StepResult,
    )
    from gateway.config import GatewayConfig
    from gateway.config.site import ChargerSection
    from gateway.runtime.loop import Runtime

POLL_S = 0.05  # how often readings are looked at while a step is timed (the latency's resolution)
PROGRESS_EVERY_S = 5.0
Say = Callable[[str], None]


@dataclass(frozen=True, slots=True)
class Options:
    wait_s: float = 60.0
    step_a: float | None = None
    timeout_s: float = 30.0
    peak_s: float = 30.0


# ------------------------------------------------------------------------------------------ the run


async def commission(config: GatewayConfig, options: Options, config_path: str, progress: Say) -> Report:
    """Run the checklist against the site of `config`; the gateway runs only for its duration."""
    import tempfile

    from gateway import __version__
    from gateway.commissioning.results import Report
    from gateway.runtime.loop import Runtime

    started = utc_now()
    with tempfile.TemporaryDirectory(prefix="gateway-commission-") as scratch:
        # A scratch store and no VTN: commissioning must not add to the site's ledger nor answer the utility.
        store = config.store.model_copy(update={"path": str(Path(scratch) / "commission.sqlite")})
        runtime = Runtime(config.model_copy(update={"vtn": None, "store": store}), serve_status=False)
        task = asyncio.create_task(runtime.run(), name="commission-runtime")
        try:
            ready = asyncio.create_task(runtime.started.wait())
            await asyncio.wait({task, ready}, return_when=asyncio.FIRST_COMPLETED)
            ready.cancel()
            if task.done():
                task.result()  # raises what stopped it from starting (a port in use, TLS files)
            checklist = Checklist(runtime, options, progress)
            chargers, meters, peak = await checklist.run()
        finally:
            await stop(runtime, task, progress)
        return Report(
            site=config.site.name,
            config_path=config_path,
            version=__version__,
            started=started,
            finished=utc_now(),
            settings=(
                ("Waited for chargers and meters", f"{options.wait_s:g} s"),
                ("Step down to", "each charger's minimum" if options.step_a is None else f"{options.step_a:g} A"),
                ("Step timeout", f"{options.timeout_s:g} s"),
                ("Peak held for", f"{options.peak_s:g} s"),
            ),
            site_rows=site_rows(config, checklist.ocpp_url),
            chargers=chargers,
            meters=meters,
            peak=peak,
            notes=(
                "The gateway's own decisions ran throughout, except while one charger at a time was stepped; "
                "the step goes down from the limit the gateway gave and back to it, never above.",
                "Commissioning used a scratch store (the site's store was not touched) and did not contact "
                "the VTN.",
                "At the end the OCPP chargers' live profiles were cleared (each is on its base profile at "
                "its fail-safe current) and the Modbus links closed (each charger falls back when its "
                "fail-safe timeout runs out).",
            ),
        )


async def stop(runtime: Runtime, task: asyncio.Task[None], progress: Say) -> None:
    """Stop the runtime (its close puts the chargers on their fail-safe current)."""
    if task.done():
        return
    progress("stopping: chargers back to their fail-safe current")
    # Python 3.11's wait_for can swallow a cancellation that meets a decision trigger (the runtime's
    # sleep between ticks): wait for the decision the last change triggered, and cancel again if needed.
    decisions = runtime.decisions
    deadline = asyncio.get_running_loop().time() + 2.0
    while runtime.decisions == decisions and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(POLL_S)
    runtime.stop()
    for _ in range(3):
        done, _pending = await asyncio.wait({task}, timeout=5.0)
        if done:
            break
        task.cancel()
    if task.done() and not task.cancelled():
        with contextlib.suppress(Exception):
            task.result()


def site_rows(config: GatewayConfig, ocpp_url: str | None) -> tuple[tuple[str, str], ...]:
    site = config.site
    usable = site.service_usable_a
    kw = usable * len(site.phases) * site.ln_v * site.power_factor / 1000.0
    rows = [
        ("Wiring", f"{site.wiring.value} ({site.ln_v:g} V line-to-neutral)"),
        ("Service breaker", f"{site.service_breaker_a:g} A"),
        ("Service limit", f"{usable:g} A per phase (about {kw:.1f} kW at PF {site.power_factor:g})"),
        ("Decision tick", f"{config.control.tick_s:g} s"),
        ("Charger counted at its maximum when silent for", f"{config.control.charger_stale_s:g} s"),
    ]
    if ocpp_url is not None:
        rows += [
            ("OCPP central system", ocpp_url),
            ("OCPP live profile lease", f"{config.ocpp.lease_s:g} s (renewed at half)"),
            ("OCPP meter interval asked for", f"{config.ocpp.meter_interval_s} s"),
        ]
    return tuple(rows)


Sample = tuple[object, dict[str, float]]  # (a token that changes with every new measurement, amps per phase)


class Checklist:
    """The checks, against a running `Runtime`."""

    def __init__(self, runtime: Runtime, options: Options, progress: Say) -> None:
        self.runtime = runtime
        self.config = runtime.config
        self.options = options
        self.say = progress
        self.loop = asyncio.get_running_loop()
        # Where chargers connect, when a driver listens for them (the OCPP central system).
        self.ocpp_url: str | None = next(
            (d.url_of("<id>") for d in runtime.drivers.values() if isinstance(d, Listens)), None)

    async def run(self) -> tuple[tuple[ChargerResult, ...], tuple[MeterResult, ...], PeakResult | None]:
        if self.ocpp_url is not None:
            self.say(f"OCPP central system listening on {self.ocpp_url}")
        await self.wait_for_site()
        await self.settle()
        chargers = []
        for n, section in enumerate(self.config.chargers, 1):
            self.say(f"charger {section.id} ({n} of {len(self.config.chargers)})")
            chargers.append(await self.charger_result(section))
        meters = tuple(self.meter_result(m.id) for m in self.config.meters)  # read as the site is now
        peak = await self.peak() if self.ready_chargers() else None
        return tuple(chargers), meters, peak

    # ------------------------------------------------------------------------------ who is there

    def connected(self, cid: str) -> bool:
        from gateway.domain import ChargerStatus

        driver = self.driver_of(cid)
        ready = driver.ready(cid) if driver is not None else None
        if ready is not None:
            return ready
        reading = self.runtime.readings.get(cid)
        return reading is not None and reading.status is not ChargerStatus.OFFLINE

    def ready_chargers(self) -> list[str]:
        return [c.id for c in self.config.chargers if self.connected(c.id)]

    def meter_ready(self, mid: str) -> bool:
        meter = self.runtime.meters.get(mid)
        return meter is not None and meter.last is not None

    async def wait_for_site(self) -> None:
        pending = {c.id for c in self.config.chargers} | {f"meter {m.id}" for m in self.config.meters}
        deadline = self.loop.time() + self.options.wait_s
        noted = self.loop.time()
        self.say(f"waiting up to {self.options.wait_s:g} s for {len(self.config.chargers)} charger(s) and "
                 f"{len(self.config.meters)} meter(s)")
        while pending and self.loop.time() < deadline:
            for item in sorted(pending):
                if item.startswith("meter "):
                    if self.meter_ready(item.removeprefix("meter ")):
                        pending.discard(item)
                        self.say(f"{item} answers")
                elif self.connected(item):
                    pending.discard(item)
                    ident = self.identity(item)
                    firmware = f", firmware {ident.firmware}" if ident and ident.firmware else ""
                    self.say(f"charger {item} is there{firmware}")
            if pending and self.loop.time() - noted >= PROGRESS_EVERY_S:
                noted = self.loop.time()
                self.say(f"still waiting for {', '.join(sorted(pending))} "
                         f"({deadline - self.loop.time():.0f} s left)")
            await asyncio.sleep(0.1)
        if pending:
            self.say(f"gave up waiting for {', '.join(sorted(pending))}")

    async def settle(self) -> None:
        """Until every charger that is there has acknowledged the limit the gateway gave it."""
        deadline = self.loop.time() + self.options.timeout_s
        noted = self.loop.time()
        while self.loop.time() < deadline:
            if self.loop.time() - noted >= PROGRESS_EVERY_S:
                noted = self.loop.time()
                self.say(f"waiting for the chargers to acknowledge their limits ({deadline - noted:.0f} s left)")
            ready = self.ready_chargers()
            acks = self.runtime.acks
            if all(cid in acks and acks[cid].accepted and cid not in self.runtime.unacked for cid in ready):
                return
            await asyncio.sleep(0.1)
        self.say("not every charger acknowledged its limit in time; going on")

    # ------------------------------------------------------------------------------ readings

    def sample(self, cid: str) -> Sample | None:
        """The charger's latest own measurement (OCPP MeterValues, a Modbus poll)."""
        from gateway.domain import ChargerStatus

        driver = self.driver_of(cid)
        own = driver.own_sample(cid) if driver is not None else None
        if own is not None or (driver is not None and driver.ready(cid) is not None):
            return own
        reading = self.runtime.readings.get(cid)
        if reading is None or reading.status is ChargerStatus.OFFLINE:
            return None
        return reading, dict(reading.current_a)

    def meter_sample(self, mid: str) -> Sample | None:
        meter = self.runtime.meters.get(mid)
        if meter is None or meter.last is None:
            return None
        return meter.last, dict(meter.last.current_a)

    async def fresh(self, get: Callable[[], Sample | None], after: Sample | None, timeout_s: float) -> Sample | None:
        deadline = self.loop.time() + timeout_s
        while self.loop.time() < deadline:
            now = get()
            if now is not None and (after is None or now[0] is not after[0]):
                return now
            await asyncio.sleep(POLL_S)
        return None

    def meter_for(self, section: ChargerSection) -> str | None:
        """The nearest meter that sees this charger's current (behind it in the circuit tree)."""
        site = self.runtime.site
        circuit = section.circuit or site.service_id
        best: tuple[int, str] | None = None
        for spec in site.meters:
            below = site.below(spec.circuit)
            if spec.includes_evs and circuit in below and (best is None or len(below) < best[0]):
                best = (len(below), spec.id)
        return best[1] if best else None

    # ------------------------------------------------------------------------------ one charger

    async def charger_result(self, section: ChargerSection) -> ChargerResult:
        from gateway.commissioning.results import ChargerResult, Check, Outcome

        cid = section.id
        checks: list[Check] = []
        identity: Identity | None = None
        status: str | None = None
        current: dict[str, float] = {}
        failsafe: tuple[tuple[str, str], ...] = ()
        step = None
        is_ocpp = section.protocol.startswith("ocpp")
        version = section.protocol.removeprefix("ocpp")
        if not self.connected(cid):
            if is_ocpp:
                why = (f"did not connect within {self.options.wait_s:g} s: set its central system URL to "
                       f"{(self.ocpp_url or '').replace('<id>', cid)}, check its password and that it "
                       f"speaks OCPP {version}")
                checks.append(Check("connect", Outcome.FAIL, why))
            else:
                ep = section.modbus
                where = f"{ep.host}:{ep.port} unit {ep.unit if ep.unit is not None else 'default'}" if ep else "?"
                checks.append(Check("read", Outcome.FAIL, f"no answer over Modbus from {where} within "
                                    f"{self.options.wait_s:g} s"))
        else:
            identity = self.identity(cid)
            if is_ocpp:
                checks.append(Check("connect", Outcome.PASS, f"connected over OCPP {version}" + (
                    "" if identity else " (sent no BootNotification: reconnected without one)")))
            timeout = self.options.timeout_s
            sample = await self.fresh(lambda: self.sample(cid), self.sample(cid), timeout)
            reading = self.runtime.readings.get(cid)
            status = self.status_of(cid) or (reading.status.value if reading else None)
            current = sample[1] if sample else {}
            if sample is None:
                checks.append(Check("read", Outcome.FAIL, f"status {status}; no measured current within "
                                    f"{timeout:g} s (the gateway counts it at its maximum until it reports one)"))
            else:
                checks.append(Check("read", Outcome.PASS, f"status {status}; " + (", ".join(
                    f"{p} {a:.1f} A" for p, a in sorted(current.items())) or "no currents")))
            driver = self.driver_of(cid)
            if driver is not None:
                report = await driver.failsafe_report(cid, section.fallback_a)
                failsafe = report.rows
                checks.append(Check("fail-safe", Outcome.PASS if report.ok else Outcome.FAIL, report.detail))
            step, check = await self.step(section, sample)
            checks.append(check)
            self.say(f"charger {cid}: step {check.outcome.value}: {check.detail}")
        return ChargerResult(
            id=cid, protocol=section.protocol, phases=section.phases,
            circuit=section.circuit or self.config.site.service_id, min_a=section.min_a, max_a=section.max_a,
            step_size_a=section.step_a, priority=section.priority, fallback_a=section.fallback_a,
            checks=tuple(checks), identity=identity, status=status, current_a=current, failsafe=failsafe, step=step,
        )

    def status_of(self, cid: str) -> str | None:
        driver = self.driver_of(cid)
        return driver.own_status(cid) if driver is not None else None

    def identity(self, cid: str) -> Identity | None:
        """What the charger said it is in this run (OCPP BootNotification), or its register map's names."""
        driver = self.driver_of(cid)
        return driver.nameplate(cid) if driver is not None else None

    def driver_of(self, cid: str) -> Commissions | None:
        """The driver of the charger's protocol family, when it answers commissioning's questions."""
        from gateway.runtime.drivers import family

        protocol = self.runtime.protocol_of.get(cid)
        driver = self.runtime.drivers.get(family(protocol)) if protocol is not None else None
        return driver if isinstance(driver, Commissions) else None

    async def step(self, section: ChargerSection, first: Sample | None) -> tuple[StepResult | None, Check]:
        """Down to the step current and back; `first` is the charger's latest own measurement."""
        from gateway.commissioning.results import Check, Outcome, StepResult, step_check, step_measurable
        from gateway.domain import J1772_MIN_A

        cid, rt, timeout = section.id, self.runtime, self.options.timeout_s
        memory = rt.memory.get(cid)
        limit = memory.limit_a if memory is not None else None
        if limit is None:
            return None, Check("step", Outcome.SKIP, "the gateway gave this charger no limit to step from")
        target = section.min_a if self.options.step_a is None else self.options.step_a
        target = min(target, limit)
        if first is None:
            return None, Check("step", Outcome.FAIL, f"the charger reported no measured current within {timeout:g} s")
        before = max(first[1].values(), default=0.0)
        if not step_measurable(before, target):
            return None, Check("step", Outcome.SKIP, f"it draws {before:.1f} A (its limit is {limit:g} A): a step "
                               f"to {target:g} A shows only with an EV (or a test load) drawing more; plug one in "
                               "and run again")
        meter_id = self.meter_for(section)
        meter_first = None
        if meter_id is not None:
            meter_first = await self.fresh(lambda: self.meter_sample(meter_id), self.meter_sample(meter_id), timeout)
        from gateway.runtime.drivers import family

        driver = rt.drivers[family(section.protocol)]
        drawn_at_step = target if target >= max(J1772_MIN_A, section.min_a) else 0.0
        self.say(f"charger {cid}: stepping {limit:g} A -> {target:g} A and back (draws {before:.1f} A)")
        rt.deciding = False
        try:
            sent = self.loop.time()
            acks = await driver.apply_limits({cid: target}, "commissioning: step down")
            ack = acks[0] if acks else None
            ack_text = "accepted" if ack is not None and ack.accepted else (ack.detail if ack else "no answer")
            down_s = meter_down_s = up_s = meter_up_s = None
            if ack is not None and ack.accepted:
                down_s, meter_down_s, low, meter_low = await self.watch(
                    section, meter_id, before, drawn_at_step, meter_first, sent, "down")
                sent = self.loop.time()
                await driver.apply_limits({cid: limit}, "commissioning: step back up")
                up_s, meter_up_s, _, _ = await self.watch(
                    section, meter_id, low, before, meter_low, sent, "up", meter_back=meter_first)
            else:
                await driver.apply_limits({cid: limit}, "commissioning: step back up")
        finally:
            rt.deciding = True
            rt.trigger("commissioning: step done")
        result = StepResult(before_a=before, limit_a=limit, step_a=target, ack_down=ack_text, down_s=down_s,
                            up_s=up_s, meter_id=meter_id if meter_first is not None else None,
                            meter_down_s=meter_down_s, meter_up_s=meter_up_s)
        return result, step_check(result, timeout)

    async def watch(self, section: ChargerSection, meter_id: str | None, start_a: float, end_a: float,
                    meter_start: Sample | None, sent: float, way: str, meter_back: Sample | None = None,
                    ) -> tuple[float | None, float | None, float, Sample | None]:
        """Until the charger's current (and the meter's, on the charger's phases) has moved from `start_a`
        to `end_a`: the seconds each took from `sent` (None: not within the timeout), the charger's current
        and the meter's sample at the end."""
        from gateway.commissioning.results import moved, phase_mean

        cid = section.id
        deadline = sent + self.options.timeout_s
        charger_s: float | None = None
        meter_s: float | None = None
        last_a = start_a
        meter_from = phase_mean(meter_start[1], section.phases) if meter_start else None
        if meter_back is not None:  # going back up: the meter returns to where it was before the step
            meter_to = phase_mean(meter_back[1], section.phases)
        else:
            meter_to = None if meter_from is None else meter_from - (start_a - end_a)
        meter_last = meter_start
        watch_meter = meter_id is not None and meter_from is not None and meter_to is not None
        noted = self.loop.time()
        while self.loop.time() < deadline and (charger_s is None or (watch_meter and meter_s is None)):
            now = self.loop.time()
            s = self.sample(cid)
            if s is not None and charger_s is None:
                last_a = max(s[1].values(), default=0.0)
                if moved(start_a, end_a, last_a):
                    charger_s = now - sent
            if watch_meter and meter_s is None and meter_id is not None:
                ms = self.meter_sample(meter_id)
                value = phase_mean(ms[1], section.phases) if ms else None
                if ms is not None and value is not None and meter_from is not None and meter_to is not None:
                    meter_last = ms
                    if moved(meter_from, meter_to, value):
                        meter_s = now - sent
            if now - noted >= PROGRESS_EVERY_S:
                noted = now
                self.say(f"charger {cid}: waiting for the step {way} to show ({deadline - now:.0f} s left)")
            await asyncio.sleep(POLL_S)
        return charger_s, meter_s, last_a, meter_last

    # ------------------------------------------------------------------------------ meters

    def meter_result(self, mid: str) -> MeterResult:
        from gateway.commissioning.results import Check, MeterResult, Outcome

        section = next(m for m in self.config.meters if m.id == mid)
        meter = self.runtime.meters.get(mid)
        circuit = section.circuit or self.config.site.service_id
        ep = section.modbus
        if meter is None or meter.last is None:
            where = f"{ep.host}:{ep.port} unit {ep.unit if ep.unit is not None else 'default'}"
            return MeterResult(mid, circuit, ep.model, Check("read", Outcome.FAIL, f"no good reading from {where} "
                               f"within {self.options.wait_s:g} s (wrong address, unit or register map?)"))
        m = meter.last
        detail = (f"{m.power_kw:.2f} kW" if m.power_kw is not None else "no power register") + "; " + (
            ", ".join(f"{p} {a:.1f} A" for p, a in sorted(m.current_a.items())) or "no currents")
        return MeterResult(mid, circuit, ep.model, Check("read", Outcome.PASS, detail), m.power_kw,
                           dict(m.current_a), dict(m.voltage_v))

    # ------------------------------------------------------------------------------ the simulated peak

    async def peak(self) -> PeakResult:
        from gateway.commissioning.results import Check, Outcome, PeakResult, peak_cap_kw, peak_tolerance_kw

        rt, hold = self.runtime, self.options.peak_s
        service = [m.id for m in self.config.meters if (m.circuit or rt.site.service_id) == rt.site.service_id]
        if service:
            source = f"meter {service[0]} at the service"
        else:
            source = "the chargers' own meters plus the estimated non-EV load (no meter at the service)"

        def reading() -> tuple[object, float | None]:
            if service:
                meter = rt.meters.get(service[0])
                last = meter.last if meter is not None else None
                return last, (last.power_kw if last is not None else None)
            return rt.last, rt.load_kw()

        site_kw, ev_kw = reading()[1], rt.ev_power_kw() or 0.0
        if site_kw is None:
            return PeakResult(Check("peak", Outcome.FAIL, "no site load could be read"), source, hold)
        if ev_kw < 1.0:
            return PeakResult(Check("peak", Outcome.SKIP, f"the EVs draw {ev_kw:.2f} kW: nothing to shed; plug in "
                                    "EVs (or test loads) and run again"), source, hold, site_kw, ev_kw)
        cap = peak_cap_kw(site_kw, ev_kw)
        tolerance = peak_tolerance_kw(cap)
        self.say(f"simulated peak: site limit lowered to {cap:.2f} kW (the site draws {site_kw:.2f} kW, the EVs "
                 f"{ev_kw:.2f} kW) for {hold:g} s")
        under_after: float | None = None
        highest: float | None = None
        samples = excursions = 0
        rt.set_operator_cap(cap)
        try:
            sent = self.loop.time()
            token = reading()[0]
            while under_after is None and self.loop.time() < sent + self.options.timeout_s:
                await asyncio.sleep(POLL_S)
                now_token, kw = reading()
                if now_token is not token and kw is not None and kw <= cap + tolerance:
                    under_after = self.loop.time() - sent
            if under_after is None:
                return PeakResult(Check("peak", Outcome.FAIL, f"the site load did not get under {cap:.2f} kW within "
                                        f"{self.options.timeout_s:g} s"), source, hold, site_kw, ev_kw, cap)
            began = noted = self.loop.time()
            token = reading()[0]
            while self.loop.time() < began + hold:
                await asyncio.sleep(POLL_S)
                now_token, kw = reading()
                if now_token is token or kw is None:
                    continue
                token = now_token
                samples += 1
                highest = kw if highest is None else max(highest, kw)
                excursions += kw > cap + tolerance
                if self.loop.time() - noted >= PROGRESS_EVERY_S:
                    noted = self.loop.time()
                    self.say(f"simulated peak: {began + hold - noted:.0f} s left, highest {highest:.2f} kW "
                             f"under {cap:.2f} kW")
        finally:
            rt.set_operator_cap(None)
        if samples == 0:
            check = Check("peak", Outcome.FAIL, f"no site reading during the {hold:g} s hold")
        elif excursions:
            check = Check("peak", Outcome.FAIL, f"{excursions} of {samples} readings above {cap:.2f} kW (highest "
                          f"{highest:.2f} kW)")
        else:
            check = Check("peak", Outcome.PASS, f"under {cap:.2f} kW after {under_after:.2f} s and for all "
                          f"{hold:g} s (highest {highest:.2f} kW)")
        self.say(f"simulated peak: {check.outcome.value}: {check.detail}")
        return PeakResult(check, source, hold, site_kw, ev_kw, cap, under_after, highest, samples, excursions)
