"""The site configuration: one TOML file, validated with pydantic, cross-checked, loaded once.

`load_config(path)` returns a `GatewayConfig` or raises `ConfigError` whose `problems` are one line
each, every line starting with the path to the field (`chargers[3].max_a: …`). Shape problems
(pydantic) and problems between entries (`gateway.config.checks`) come in the same run: when pydantic
refuses some entries, the rest is still cross-checked.
"""

from __future__ import annotations

import difflib
import re
import tomllib
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_core import ErrorDetails

from gateway.config.control import ControlSection, StatusSection, StoreSection
from gateway.config.ocpp import OcppSection
from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.config.pv import PvSection
from gateway.config.site import ChargerSection, CircuitSection, MeterSection, SiteSection
from gateway.config.tariff import TariffSection
from gateway.wording import kind_of, number_problem, short_repr

if TYPE_CHECKING:
    from gateway.config.checks import Omitted

# The sections written as arrays of tables ([[chargers]]); their entries are checked one by one.
LIST_SECTIONS = ("circuits", "chargers", "meters")
# A config this big is a mistake (or an attack on the parser), not a site.
MAX_CONFIG_BYTES = 16 * 1024 * 1024


class ConfigError(Exception):
    """A config a user wrote is wrong; `problems` says where and why, one line each."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


class GatewayConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
    pv: PvSection = Field(default_factory=PvSection)


_BARE_KEY = re.compile(r"^[A-Za-z0-9_:-]+$")


def field_path(loc: tuple[int | str, ...]) -> str:
    """('chargers', 3, 'max_a') → 'chargers[3].max_a'; a key TOML would quote is quoted (one line, always)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            key = str(part) if _BARE_KEY.fullmatch(str(part)) else short_repr(str(part))
            out += f".{key}" if out else key
    return out or "(top level)"


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    """Validate an already-parsed TOML document; raise ConfigError listing every problem."""
    from gateway.config.checks import cross_check

    try:
        config = GatewayConfig.model_validate(data)
    except ValidationError as exc:
        problems = _pydantic_problems(exc)
        partial = _partial(data, exc)
        if partial is not None:
            problems += [p for p in cross_check(*partial) if p not in problems]
        raise ConfigError(problems) from None
    from gateway.config.pv import pv_problems

    problems = cross_check(config) + pv_problems(config)
    if problems:
        raise ConfigError(problems)
    return config


def load_config(path: str | Path) -> GatewayConfig:
    path = Path(path)
    try:
        if path.is_dir():
            raise ConfigError([f"{path}: is a directory, not a config file"])
        with path.open("rb") as file:
            raw = file.read(MAX_CONFIG_BYTES + 1)
    except OSError as exc:
        raise ConfigError([f"{path}: cannot read ({exc.strerror or exc})"]) from None
    if len(raw) > MAX_CONFIG_BYTES:
        raise ConfigError([f"{path}: larger than {MAX_CONFIG_BYTES // (1024 * 1024)} MiB, not a site config"])
    try:
        text = raw.decode("utf-8").removeprefix("\ufeff")  # editors on Windows write a byte-order mark
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise ConfigError([f"{path}: not UTF-8 text (line {line}); save the file as UTF-8"]) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path}: not valid TOML: {exc}"]) from None
    except RecursionError:
        raise ConfigError([f"{path}: arrays or tables nested too deeply, not a site config"]) from None
    return parse_config(data)


# ------------------------------------------------------------------------------------ pydantic's errors


def _pydantic_problems(exc: ValidationError) -> list[str]:
    problems = []
    for err in exc.errors():
        loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
        problem = f"{field_path(loc)}: {_message(err, loc)}"
        if problem not in problems:
            problems.append(problem)
    return problems


def _message(err: ErrorDetails, loc: tuple[int | str, ...]) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        guess = _closest_key(loc)
        return f"unknown key (did you mean {guess!r}?)" if guess else "unknown key (a typo?)"
    if kind == "missing":
        return "required key is missing"
    if kind in ("tuple_type", "list_type"):
        if len(loc) == 1 and loc[0] in LIST_SECTIONS:
            return f"expected [[{loc[0]}]] tables (an array of tables), got {kind_of(err['input'])}"
        return f"expected a list, got {kind_of(err['input'])}"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a table, got {kind_of(err['input'])}"
    if kind == "string_pattern_mismatch" and loc and loc[-1] in ("id", "parent", "circuit", "service_id"):
        return (
            f"{err['input']!r} is not a usable id: letters, digits and _ . : - only, starting with a letter or digit"
        )
    number = number_problem(kind, err.get("input"))
    if number is not None:
        return number
    if kind == "greater_than_equal" and loc and loc[-1] in ("min_a", "max_a") and loc[0] == "chargers":
        return f"{short_repr(err['input'])} A is below 6 A, the J1772 minimum (a pilot under 6 A means stop)"
    message = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    if kind != "value_error" and isinstance(value, str | int | float | bool):
        message += f" (got {short_repr(value)})"
    return message


def _closest_key(loc: tuple[int | str, ...]) -> str | None:
    """The known key nearest to the unknown one at `loc`, found by walking the models along the path."""
    model: type[BaseModel] | None = GatewayConfig
    for part in loc[:-1]:
        if isinstance(part, int):
            continue
        if model is None or part not in model.model_fields:
            return None
        model = _model_in(model.model_fields[part].annotation)
    if model is None or not isinstance(loc[-1], str):
        return None
    matches = difflib.get_close_matches(loc[-1], list(model.model_fields), n=1, cutoff=0.6)
    return matches[0] if matches else None


def _model_in(annotation: object) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is not None:
        for arg in typing.get_args(annotation):
            found = _model_in(arg)
            if found is not None:
                return found
    return None


def _partial(data: object, exc: ValidationError) -> tuple[GatewayConfig, Omitted] | None:
    """The config without what pydantic refused, and what was left out; None when nothing useful is left."""
    from gateway.config.checks import Omitted

    if not isinstance(data, dict):
        return None
    bad_entries: dict[str, set[int]] = {}
    bad_sections: set[str] = set()
    for err in exc.errors():
        loc = err["loc"]
        if not loc:
            return None
        head = str(loc[0])
        if head in LIST_SECTIONS and len(loc) > 1 and isinstance(loc[1], int):
            bad_entries.setdefault(head, set()).add(loc[1])
        else:
            bad_sections.add(head)
    if "site" in bad_sections:
        return None  # everything electrical hangs off the site: nothing sensible to cross-check
    patched = {k: v for k, v in data.items() if k not in bad_sections}
    positions: dict[str, tuple[int, ...]] = {}
    refused_circuit_ids: set[str] = set()
    refused_ids: dict[str, list[tuple[int, str]]] = {}
    for kind in LIST_SECTIONS:
        items = patched.get(kind)
        if not isinstance(items, list):
            continue
        refused = bad_entries.get(kind, set())
        positions[kind] = tuple(i for i in range(len(items)) if i not in refused)
        patched[kind] = [items[i] for i in positions[kind]]
        refused_ids[kind] = [
            (i, items[i]["id"])
            for i in sorted(refused)
            if i < len(items) and isinstance(items[i], dict) and isinstance(items[i].get("id"), str)
        ]
        if kind == "circuits":
            refused_circuit_ids = {ident for _, ident in refused_ids[kind]}
    try:
        config = GatewayConfig.model_validate(patched)
    except ValidationError:
        return None
    circuits_refused = "circuits" in bad_sections
    omitted = Omitted(
        positions=positions,
        circuit_ids=None if circuits_refused else frozenset(refused_circuit_ids),
        refused_ids=refused_ids,
    )
    return config, omitted


__all__ = ["ConfigError", "GatewayConfig", "field_path", "load_config", "number_problem", "parse_config", "short_repr"]
