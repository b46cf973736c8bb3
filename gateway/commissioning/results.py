"""The commissioning checklist's results, pure (no I/O, no clock): per charger whether it connected and what
it said it is (OCPP BootNotification), what it reads, its fail-safe settings and how long a step down and
back up took to show in the measured current (the charger's own meter and the site meter); per meter a
reading; and whether the site stayed under a lowered limit held for a while (the simulated peak). The
thresholds that decide when a step "shows" are here too, so they are tested without a site; `passed` is
true only when every check passed (a check that could not be made is not a pass)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from gateway.ports import Nameplate

# A step shows in the measured current once the current has moved this far from where it was towards the
# new limit: EVs ramp and meters average, so the last few percent are not waited for.
FOLLOW_FRACTION = 0.8


# A charger must draw at least this much above the step's target for the step to be measurable.
STEP_MARGIN_A = 3.0


# The peak test lowers the site limit by this fraction of what the EVs draw: they must shed that much.
PEAK_SHED_FRACTION = 0.5


# A site reading this far above the lowered limit is an excursion (meters and rounding are not exact).
PEAK_TOLERANCE_KW = 0.1


PEAK_TOLERANCE_FRACTION = 0.01


class Outcome(StrEnum):
    PASS = "PASS"
    FAIL = "FAILED"
    SKIP = "NOT TESTED"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    outcome: Outcome
    detail: str


# What a charger says it is (OCPP BootNotification fields, or the Modbus map's vendor and product): its
# driver's nameplate as it is.
Identity = Nameplate


@dataclass(frozen=True, slots=True)
class StepResult:
    """One charger stepped from `limit_a` down to `step_a` and back; seconds from the push to the reading."""

    before_a: float  # what it drew before the step
    limit_a: float  # the limit in force before (and after) the step
    step_a: float
    ack_down: str  # the charger's answer to the lower limit
    down_s: float | None = None  # charger's own current, None: not seen within the timeout
    up_s: float | None = None
    meter_id: str | None = None  # the meter that should see the charger's current
    meter_down_s: float | None = None
    meter_up_s: float | None = None


@dataclass(frozen=True, slots=True)
class ChargerResult:
    id: str
    protocol: str
    phases: tuple[str, ...]
    circuit: str
    min_a: float
    max_a: float
    step_size_a: float
    priority: int
    fallback_a: float
    checks: tuple[Check, ...]
    identity: Identity | None = None
    status: str | None = None
    current_a: Mapping[str, float] = field(default_factory=dict)
    failsafe: tuple[tuple[str, str], ...] = ()  # (setting, value) rows for the report
    step: StepResult | None = None


@dataclass(frozen=True, slots=True)
class MeterResult:
    id: str
    circuit: str
    model: str
    check: Check
    power_kw: float | None = None
    current_a: Mapping[str, float] = field(default_factory=dict)
    voltage_v: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PeakResult:
    check: Check
    source: str  # what "measured site load" was read from
    hold_s: float
    before_kw: float | None = None
    ev_before_kw: float | None = None
    cap_kw: float | None = None
    under_after_s: float | None = None  # from setting the cap to the first reading under it
    max_kw: float | None = None  # the highest reading during the hold (after it first got under)
    samples: int = 0
    excursions: int = 0


@dataclass(frozen=True, slots=True)
class Report:
    site: str
    config_path: str
    version: str
    started: datetime
    finished: datetime
    settings: tuple[tuple[str, str], ...]  # the commissioning options, (name, value)
    site_rows: tuple[tuple[str, str], ...]  # service limits etc., (name, value)
    chargers: tuple[ChargerResult, ...]
    meters: tuple[MeterResult, ...]
    peak: PeakResult | None
    notes: tuple[str, ...] = ()


def moved(before: float, target: float, now: float, fraction: float = FOLLOW_FRACTION) -> bool:
    """True once `now` has gone `fraction` of the way from `before` to `target` (either direction)."""
    if before == target:
        return True
    return (now - before) / (target - before) >= fraction


def step_measurable(before_a: float, step_a: float, margin_a: float = STEP_MARGIN_A) -> bool:
    return before_a >= step_a + margin_a


def peak_cap_kw(site_kw: float, ev_kw: float, shed_fraction: float = PEAK_SHED_FRACTION) -> float:
    """The lowered site limit for the peak test: what the site draws less a share of what the EVs draw,
    so the test can pass only if the gateway really cuts the chargers (and can, the rest being theirs)."""
    return round(site_kw - shed_fraction * ev_kw, 2)


def peak_tolerance_kw(cap_kw: float) -> float:
    return max(PEAK_TOLERANCE_KW, PEAK_TOLERANCE_FRACTION * abs(cap_kw))


def phase_mean(current: Mapping[str, float], phases: Sequence[str]) -> float | None:
    """The mean current over `phases` (None when the reading has none of them)."""
    values = [current[p] for p in phases if p in current]
    return sum(values) / len(values) if values else None


def step_check(step: StepResult, timeout_s: float) -> Check:
    """A step passes when the charger's own current showed it both ways, and so did the meter that should
    see the charger (when there is one)."""
    missing = []
    if step.ack_down != "accepted":
        return Check("step", Outcome.FAIL, f"the lower limit was not accepted: {step.ack_down}")
    if step.down_s is None:
        missing.append(f"the charger's current did not fall to {step.step_a:g} A within {timeout_s:g} s")
    if step.up_s is None:
        missing.append(f"the charger's current did not rise back towards {step.before_a:.1f} A within "
                       f"{timeout_s:g} s")
    # The wiring hint only helps when the charger itself followed: otherwise the meter had nothing to see.
    if not missing and step.meter_id is not None and (step.meter_down_s is None or step.meter_up_s is None):
        missing.append(f"meter {step.meter_id} did not see the step on the charger's phases (is the "
                       "charger wired to the phases the config gives it, and behind this meter?)")
    if missing:
        return Check("step", Outcome.FAIL, "; ".join(missing))
    return Check("step", Outcome.PASS, f"followed: down in {_s(step.down_s)}, up in {_s(step.up_s)}")


def all_checks(report: Report) -> list[tuple[str, Check]]:
    """Every check with what it was about."""
    out: list[tuple[str, Check]] = []
    for c in report.chargers:
        out += [(f"charger {c.id}", check) for check in c.checks]
    out += [(f"meter {m.id}", m.check) for m in report.meters]
    if report.peak is not None:
        out.append(("site", report.peak.check))
    return out


def passed(report: Report) -> bool:
    checks = all_checks(report)
    return bool(checks) and all(check.outcome is Outcome.PASS for _, check in checks)


def _s(seconds: float | None) -> str:
    return "—" if seconds is None else f"{seconds:.2f} s"
