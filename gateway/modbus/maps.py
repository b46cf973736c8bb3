"""Register maps: one TOML file per device model, loaded and validated into frozen models.

A map names each register by what it means to the gateway (`setpoint`, `current_l1`, `import_energy` …),
says where it is (table and address, as the vendor's document numbers them from 0), how it is encoded
(type, word order, scale to the gateway's units: A, V, kW, kWh, s) and whether it may be read or written.
Shipped maps live next to this module in `maps/`; a user map is any file with the same shape, named by
its path. Every problem is reported as one line naming the file and the key.
"""

from __future__ import annotations

import itertools
import tomllib
from enum import StrEnum
from functools import cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from gateway.domain import ChargerStatus

MAPS_DIR = Path(__file__).with_name("maps")

WordOrder = Literal["big", "little"]


class MapError(Exception):
    """A register map cannot be found or is wrong; `problems` are one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class Table(StrEnum):
    HOLDING = "holding"
    INPUT = "input"


class RegType(StrEnum):
    INT16 = "int16"
    UINT16 = "uint16"
    INT32 = "int32"
    UINT32 = "uint32"
    INT64 = "int64"
    UINT64 = "uint64"
    FLOAT32 = "float32"
    FLOAT64 = "float64"
    STRING = "string"


WIDTH: dict[RegType, int] = {
    RegType.INT16: 1,
    RegType.UINT16: 1,
    RegType.INT32: 2,
    RegType.UINT32: 2,
    RegType.INT64: 4,
    RegType.UINT64: 4,
    RegType.FLOAT32: 2,
    RegType.FLOAT64: 4,
}

PHASE_KEYS = ("l1", "l2", "l3")
# What each register name means, in the gateway's unit; the unit decides the sanity range below.
CHARGER_REGISTERS: dict[str, str] = {
    "setpoint": "A",
    "applied_limit": "A",
    "status": "state",
    "failsafe_current": "A",
    "failsafe_timeout": "s",
    "watchdog": "count",
    "enable": "count",  # 1 lets the charger charge, 0 pauses it
    "power": "kW",
    "energy": "kWh",
    **{f"current_{p}": "A" for p in PHASE_KEYS},
    **{f"voltage_{p}": "V" for p in PHASE_KEYS},
}
METER_REGISTERS: dict[str, str] = {
    "power": "kW",
    "import_energy": "kWh",
    "export_energy": "kWh",
    "frequency": "Hz",
    **{f"current_{p}": "A" for p in PHASE_KEYS},
    **{f"voltage_{p}": "V" for p in PHASE_KEYS},
    **{f"power_{p}": "kW" for p in PHASE_KEYS},
}
# Plausible magnitudes for a value in each unit. A float read with the wrong word order comes out either
# huge or denormal-tiny; an int comes out ~65536 times too large. Either way it lands outside these.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "A": (-2000.0, 2000.0),
    "V": (0.0, 1000.0),
    "kW": (-5000.0, 5000.0),
    "kWh": (0.0, 1e9),
    "Hz": (40.0, 70.0),
    "s": (0.0, 86400.0),
}
# Non-zero magnitudes below this are a float decoded with swapped words (230.0 swapped reads 2.4e-41), not a
# measurement. It sits far under any real reading: a charger's energy counter a millisecond into a session
# already reads ~1e-6 kWh.
TINY = 1e-12


class Register(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    table: Table
    address: int = Field(ge=0, le=65535)
    type: RegType
    count: int | None = Field(default=None, ge=1, le=64)  # registers of a string; fixed for numbers
    scale: float = 1.0  # gateway value = raw × scale
    word_order: WordOrder | None = None  # None: the map's
    access: Literal["r", "w", "rw"] = "r"
    write_value: int | None = None  # what to write (a watchdog's "1"); None: the gateway's value
    shift: int = Field(default=0, ge=0, le=63)  # a field packed in an integer: (raw >> shift) & mask
    mask: int | None = Field(default=None, ge=1)

    @property
    def width(self) -> int:
        return self.count if self.type is RegType.STRING and self.count else WIDTH.get(self.type, 1)

    @property
    def readable(self) -> bool:
        return "r" in self.access

    @property
    def writable(self) -> bool:
        return "w" in self.access

    @field_validator("scale")
    @classmethod
    def _scale(cls, value: float) -> float:
        if value == 0:
            raise ValueError("scale must not be 0")
        return value

    @model_validator(mode="after")
    def _shape(self) -> Register:
        if self.type is RegType.STRING and self.count is None:
            raise ValueError("a string register needs count (how many registers it spans)")
        if self.type is not RegType.STRING and self.count is not None:
            raise ValueError(f"count is implied by type {self.type.value}; remove it")
        if self.address + self.width - 1 > 65535:
            raise ValueError("runs past address 65535")
        if (self.shift or self.mask is not None) and self.type in (RegType.FLOAT32, RegType.FLOAT64, RegType.STRING):
            raise ValueError("shift and mask apply to integer registers only")
        if self.writable and self.table is Table.INPUT:
            raise ValueError("input registers cannot be written; use table = 'holding'")
        return self


class RegisterMap(BaseModel):
    """One device model's registers and behaviour, as the vendor documents them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(min_length=1, pattern=r"^[a-z0-9][a-z0-9-]*$")
    kind: Literal["charger", "meter"]
    vendor: str
    product: str
    source: str = Field(min_length=1)  # the document the addresses come from
    unit: int = Field(default=1, ge=0, le=255)
    word_order: WordOrder = "big"
    max_gap: int = Field(default=0, ge=0, le=100)  # unused registers one read may span (0: none)
    max_read: int = Field(default=120, ge=1, le=125)  # registers one read may fetch (devices that cap lower)
    single_write: Literal["fc6", "fc16"] = "fc6"  # how a one-register value is written
    failsafe_timeout_s: float | None = Field(default=None, gt=0, le=3600)  # programmed, or the device's own
    refresh_s: float | None = Field(default=None, gt=0, le=3600)  # None: failsafe_timeout_s / 2
    # Rewrite the failsafe timeout with every refresh too, for devices whose failsafe timer that write resets
    refresh_failsafe_timeout: bool = False
    status: dict[str, ChargerStatus] = Field(default_factory=dict)  # raw state (as text) → status
    registers: dict[str, Register]

    def reg(self, name: str) -> Register | None:
        return self.registers.get(name)

    def word_order_of(self, register: Register) -> WordOrder:
        return register.word_order or self.word_order

    @property
    def refresh_every_s(self) -> float | None:
        """How often the setpoint must be rewritten so the charger does not fall back; None: never."""
        if self.refresh_s is not None:
            return self.refresh_s
        return self.failsafe_timeout_s / 2 if self.failsafe_timeout_s else None

    def quantity(self, name: str) -> str:
        known = CHARGER_REGISTERS if self.kind == "charger" else METER_REGISTERS
        return known[name]

    @model_validator(mode="after")
    def _meaning(self) -> RegisterMap:
        known = CHARGER_REGISTERS if self.kind == "charger" else METER_REGISTERS
        for name in self.registers:
            if name not in known:
                raise ValueError(f"registers.{name}: not a {self.kind} register (known: {', '.join(known)})")
        if self.kind == "charger":
            setpoint = self.registers.get("setpoint")
            if setpoint is None or not setpoint.writable:
                raise ValueError("registers.setpoint: a charger map needs a writable setpoint register")
            for name in ("failsafe_timeout", "watchdog", "enable"):
                r = self.registers.get(name)
                if r is not None and not r.writable:
                    raise ValueError(f"registers.{name}: must be writable (access = 'w' or 'rw')")
            if "watchdog" in self.registers and self.registers["watchdog"].write_value is None:
                raise ValueError("registers.watchdog: needs write_value (what the charger expects)")
            if "status" in self.registers and not self.status:
                raise ValueError("status: a status register needs a [status] table of raw value → status")
            if "failsafe_timeout" in self.registers and self.failsafe_timeout_s is None:
                raise ValueError("failsafe_timeout_s: needed to program registers.failsafe_timeout")
            fs_timeout = self.registers.get("failsafe_timeout")
            if fs_timeout is not None and self.failsafe_timeout_s is not None and fs_timeout.type.value.endswith(
                    ("int16", "int32", "int64")) and self.failsafe_timeout_s < abs(fs_timeout.scale):
                raise ValueError(f"failsafe_timeout_s: {self.failsafe_timeout_s:g} s is below the resolution of "
                                 f"registers.failsafe_timeout ({abs(fs_timeout.scale):g} s); it would be written as 0")
            if self.refresh_failsafe_timeout and "failsafe_timeout" not in self.registers:
                raise ValueError("refresh_failsafe_timeout: needs a registers.failsafe_timeout to rewrite")
            if self.refresh_s is not None and self.failsafe_timeout_s is not None \
                    and self.refresh_s > self.failsafe_timeout_s / 2:
                raise ValueError(f"refresh_s: at most half of failsafe_timeout_s ({self.failsafe_timeout_s / 2:g} s), "
                                 "so one missed refresh does not trip the failsafe")
        elif not any(f"current_{p}" in self.registers for p in PHASE_KEYS):
            raise ValueError("registers: a meter map needs at least current_l1")
        for name, r in self.registers.items():
            if r.readable and r.width > self.max_read:
                raise ValueError(f"registers.{name}: spans {r.width} registers, more than max_read = {self.max_read}")
        self._no_overlap()
        return self

    def _no_overlap(self) -> None:
        spans: dict[Table, list[tuple[int, int, str]]] = {t: [] for t in Table}
        for name, r in self.registers.items():
            spans[r.table].append((r.address, r.address + r.width, name))
        for items in spans.values():
            items.sort()
            for (_, end, a), (start, _, b) in itertools.pairwise(items):
                if start < end:
                    raise ValueError(f"registers.{b}: overlaps registers.{a}")


def shipped_models() -> list[str]:
    """The names of the maps shipped with the gateway, sorted."""
    return sorted(p.stem for p in MAPS_DIR.glob("*.toml"))


def is_path(model: str) -> bool:
    return model.endswith(".toml") or "/" in model or "\\" in model


def _problems(where: str, exc: ValidationError) -> list[str]:
    out = []
    for err in exc.errors():
        loc = ".".join(str(p) for p in err["loc"])
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown key (a typo?)"
        elif err["type"] == "missing":
            msg = "required key is missing"
        out.append(f"{where}: {loc + ': ' if loc else ''}{msg}")
    return out


def parse_map(text: str, where: str) -> RegisterMap:
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise MapError([f"{where}: not valid TOML: {exc}"]) from None
    try:
        return RegisterMap.model_validate(data)
    except ValidationError as exc:
        raise MapError(_problems(where, exc)) from None


@cache
def _load_file(path: Path) -> RegisterMap:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise MapError([f"{path}: cannot read register map ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise MapError([f"{path}: register map is not UTF-8 text"]) from None
    return parse_map(text, str(path))


def load_map(model: str, base: Path | None = None) -> RegisterMap:
    """A shipped map by name ("abb-terra-ac") or a user map by path (relative to `base` if given)."""
    if is_path(model):
        path = Path(model)
        if base is not None and not path.is_absolute():
            path = base / path
        return _load_file(path.resolve())
    path = MAPS_DIR / f"{model}.toml"
    if not path.is_file():
        raise MapError([f"unknown model {model!r} (known: {', '.join(shipped_models())}; or a path to a .toml map)"])
    return _load_file(path)
