"""The site configuration: one TOML file, validated with pydantic, cross-checked, loaded once.

`load_config(path)` returns a `GatewayConfig` or raises `ConfigError` whose `problems` are one line
each, every line starting with the path to the field (`chargers[3].max_a: …`).
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from gateway.config.control import ControlSection, StatusSection, StoreSection
from gateway.config.ocpp import OcppSection
from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.config.site import ChargerSection, CircuitSection, MeterSection, SiteSection
from gateway.config.tariff import TariffSection


class ConfigError(Exception):
    """A config a user wrote is wrong; `problems` says where and why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    site: SiteSection
    circuits: tuple[CircuitSection, ...] = ()
    chargers: tuple[ChargerSection, ...] = ()
    meters: tuple[MeterSection, ...] = ()
    vtn: VtnSection | None = None
    openadr: OpenAdrSection = Field(default_factory=OpenAdrSection)
    control: ControlSection = Field(default_factory=ControlSection)
    status: StatusSection = Field(default_factory=StatusSection)
    store: StoreSection = Field(default_factory=StoreSection)
    ocpp: OcppSection = Field(default_factory=OcppSection)
    tariff: TariffSection = Field(default_factory=TariffSection)


def field_path(loc: tuple[int | str, ...]) -> str:
    """('chargers', 3, 'max_a') → 'chargers[3].max_a'."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        message = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            message = "unknown key (a typo?)"
        elif err["type"] == "missing":
            message = "required key is missing"
        problems.append(f"{field_path(loc)}: {message}")
    return problems


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    """Validate an already-parsed TOML document; raise ConfigError listing every problem."""
    from gateway.config.checks import cross_check

    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_pydantic_problems(exc)) from None
    problems = cross_check(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{path}: not UTF-8 text"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    return parse_config(data)


__all__ = ["ConfigError", "GatewayConfig", "field_path", "load_config", "parse_config"]
