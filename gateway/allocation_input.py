"""The JSON a user gives `gateway allocate` (and `gateway plan`), validated and turned into a `Problem`.

Keys: `circuits` [{id, parent, limit_a, phases?}], `evses` [{id, circuit, phases, voltage_v, min_a, max_a,
step_a, connected, priority, energy_needed_kwh?, departure?, …}], `non_ev_load_a` {circuit: {phase: A or
{a, measured_at?, worst_a?}}}, `site_limit_kw?`, `ev_limit_kw?`, `non_ev_kw?`, `now`. Every problem is
reported as one line with the path to the value, like the config's.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any, TypeVar

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.allocate import Problem
from gateway.config import ConfigError, field_path, number_problem, short_repr
from gateway.config.numbers import Real, Whole
from gateway.config.site import parse_phases
from gateway.domain import J1772_MIN_A, PHASES, Circuit, EvseState, NonEvLoad, SiteLimits

M = TypeVar("M", bound=BaseModel)


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class CircuitIn(_In):
    id: str = Field(min_length=1)
    parent: str | None = None
    limit_a: Real = Field(ge=0)
    phases: tuple[str, ...] = PHASES

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: object) -> tuple[str, ...]:
        return parse_phases(value)


class EvseIn(_In):
    id: str = Field(min_length=1)
    circuit: str
    phases: tuple[str, ...]
    voltage_v: Real = Field(gt=0, le=1000)
    min_a: Real = Field(default=J1772_MIN_A, ge=0, le=1000)
    max_a: Real = Field(ge=0, le=1000)
    step_a: Real = Field(default=1.0, gt=0, le=100)
    connected: bool = True
    priority: Whole = 0
    energy_needed_kwh: Real | None = Field(default=None, ge=0)
    departure: AwareDatetime | None = None
    waiting_since: AwareDatetime | None = None
    on_since: AwareDatetime | None = None
    held_a: Real | None = Field(default=None, ge=0)
    power_factor: Real = Field(default=1.0, gt=0, le=1)

    @field_validator("phases", mode="before")
    @classmethod
    def _phases(cls, value: object) -> tuple[str, ...]:
        return parse_phases(value)


class LoadIn(_In):
    a: Real
    measured_at: AwareDatetime | None = None
    worst_a: Real | None = None

    @model_validator(mode="before")
    @classmethod
    def _bare_amps(cls, value: object) -> object:
        # A bare number is the reading now; one model (not a union) keeps a bad value to one error line.
        return {"a": value} if isinstance(value, int | float | str) and not isinstance(value, bool) else value


class AllocationIn(_In):
    now: AwareDatetime
    circuits: tuple[CircuitIn, ...] = ()
    evses: tuple[EvseIn, ...] = ()
    non_ev_load_a: dict[str, dict[str, LoadIn]] = Field(default_factory=dict)
    site_limit_kw: Real | None = Field(default=None, ge=0)
    ev_limit_kw: Real | None = Field(default=None, ge=0)
    non_ev_kw: Real = 0.0
    stale_after_s: Real = Field(default=10.0, gt=0)
    min_on_time_s: Real = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _references(self) -> AllocationIn:
        ids = [c.id for c in self.circuits]
        problems: list[str] = []
        seen: set[str] = set()
        for n, c in enumerate(self.circuits):
            if c.id in seen:
                problems.append(f"circuits[{n}].id: duplicate id {c.id!r}")
            seen.add(c.id)
            if c.parent is not None and c.parent not in ids:
                problems.append(f"circuits[{n}].parent: unknown circuit {c.parent!r}")
        roots = [c.id for c in self.circuits if c.parent is None]
        if len(roots) != 1:
            problems.append(f"circuits: need exactly one root (parent null), found {len(roots)}")
        by_id = {c.id: c for c in self.circuits}
        for n, c in enumerate(self.circuits):
            node, hops = c.parent, 0
            while node is not None and node in by_id and hops <= len(ids):
                node, hops = by_id[node].parent, hops + 1
            if hops > len(ids):
                problems.append(f"circuits[{n}].parent: cycle through {c.id!r}")
        evse_ids: set[str] = set()
        for n, e in enumerate(self.evses):
            if e.id in evse_ids:
                problems.append(f"evses[{n}].id: duplicate id {e.id!r}")
            evse_ids.add(e.id)
            if e.circuit not in by_id:
                problems.append(f"evses[{n}].circuit: unknown circuit {e.circuit!r}")
            else:
                missing = [p for p in e.phases if p not in by_id[e.circuit].phases]
                if missing:
                    problems.append(f"evses[{n}].phases: circuit {e.circuit!r} does not carry {'-'.join(missing)}")
            if e.max_a > 0 and e.min_a > e.max_a:
                problems.append(f"evses[{n}].min_a: {e.min_a:g} is above max_a {e.max_a:g}")
        for circuit, phases in self.non_ev_load_a.items():
            if circuit not in by_id:
                problems.append(f"non_ev_load_a.{circuit}: unknown circuit")
                continue
            for phase in phases:
                if phase not in by_id[circuit].phases:
                    problems.append(f"non_ev_load_a.{circuit}.{phase}: circuit {circuit!r} has no {phase}")
        if problems:
            raise ValueError("\n".join(problems))
        return self


def read_json_input(name: str) -> Any:
    """The JSON document in file `name` (or standard input for "-"); ConfigError with one line if not."""
    try:
        if name == "-":
            text = sys.stdin.read()
        else:
            with open(name, encoding="utf-8") as handle:
                text = handle.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{name}: cannot read ({getattr(exc, 'strerror', None) or exc})"]) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError([f"{name}: not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"]) from None


def validate_input(model: type[M], data: Any) -> M:
    """`data` as an instance of `model`, or ConfigError with one line per problem, each with its path."""
    if not isinstance(data, dict):
        raise ConfigError(["(top level): expected a JSON object"])
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for err in exc.errors():
            message = err["msg"].removeprefix("Value error, ")
            loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
            if not loc:
                problems.extend(message.splitlines())
                continue
            if err["type"] == "extra_forbidden":
                message = "unknown key (a typo?)"
            elif err["type"] == "missing":
                message = "required key is missing"
            elif (number := number_problem(err["type"], err.get("input"))) is not None:
                message = number
            elif err["type"] in ("model_type", "model_attributes_type", "dict_type"):
                message = "expected a JSON object"
                if len(loc) == 3 and loc[0] == "non_ev_load_a":
                    message = 'expected amps (a number) or {"a": …, "measured_at": …, "worst_a": …}'
                message += f" (got {short_repr(err.get('input'))})"
            elif err["type"] != "value_error" and isinstance(err.get("input"), int | float | str):
                message += f" (got {short_repr(err['input'])})"
            problems.append(f"{field_path(loc)}: {message}")
        raise ConfigError(problems) from None


def parse_allocation_input(data: Any) -> AllocationIn:
    return validate_input(AllocationIn, data)


def to_problem(spec: AllocationIn) -> Problem:
    circuits = [Circuit(c.id, c.parent, c.limit_a, c.phases) for c in spec.circuits]
    loads = []
    for circuit, phases in spec.non_ev_load_a.items():
        for phase, value in phases.items():
            loads.append(NonEvLoad(circuit, phase, value.a, value.measured_at or spec.now, value.worst_a))
    evses = [
        EvseState(
            id=e.id, circuit=e.circuit, phases=e.phases, voltage_v=e.voltage_v, max_a=e.max_a,
            min_a=max(J1772_MIN_A, e.min_a), step_a=e.step_a, priority=e.priority, connected=e.connected,
            energy_needed_kwh=e.energy_needed_kwh, departure=e.departure, on_since=e.on_since,
            waiting_since=e.waiting_since, held_a=e.held_a, power_factor=e.power_factor,
        )
        for e in spec.evses
    ]
    limits = SiteLimits(site_kw=spec.site_limit_kw, ev_kw=spec.ev_limit_kw, non_ev_kw=spec.non_ev_kw)
    return Problem(
        circuits=circuits, evses=evses, now=spec.now, non_ev=loads, limits=limits,
        stale_after=timedelta(seconds=spec.stale_after_s), min_on_time=timedelta(seconds=spec.min_on_time_s),
    )


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    if moment.tzinfo is None:
        raise ValueError(f"{value!r} has no time zone offset")
    return moment
