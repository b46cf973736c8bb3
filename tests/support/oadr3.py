"""An OpenADR 3 site for the tests: the config of a small site on 127.0.0.1 whose VEN speaks OpenADR 3 to a
simulated VTN (gateway.sim.vtn3), and what the VTN heard from it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from gateway.sim.vtn3 import SimVtn3, interval, period

CHARGERS = ("cp-1", "cp-2", "cp-3")
CIRCUIT = "panel-a"  # cp-1 and cp-2 hang on it


def site_config(vtn: SimVtn3, store: Path, *, subscribe: bool = True, token_url: str | None = None,
                poll_s: float = 0.5, extra: str = "") -> str:
    """`extra`: more lines of the [openadr] section (and the tables after it)."""
    lines = ["[site]", 'name = "oadr3 site"', 'wiring = "three-phase-400/230"', "service_breaker_a = 125", "",
             "[[circuits]]", f'id = "{CIRCUIT}"', "breaker_a = 80", ""]
    for n, cid in enumerate(CHARGERS):
        lines += ["[[chargers]]", f'id = "{cid}"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"', "max_a = 32",
                  "fallback_a = 6"] + ([f'circuit = "{CIRCUIT}"'] if n < 2 else []) + [""]
    lines += [
        "[vtn]", f'url = "{vtn.url}"', 'ven_name = "oadr3-site"', "allow_plain_http = true", f"poll_s = {poll_s}",
        'protocol = "3"', "request_timeout_s = 1", "backoff_initial_s = 0.2", "backoff_max_s = 1", "",
        "[vtn.oadr3]", f'version = "{vtn.version}"', 'client_id = "ven-client"', 'client_secret = "ven-secret"',
        f"subscribe = {'true' if subscribe else 'false'}",
        *([f'token_url = "{token_url}"'] if token_url else []), "",
        "[openadr]", "report_interval_s = 1", extra, "",
        "[ocpp]", "port = 0", "",
        "[control]", "tick_s = 0.25", "",
        "[status]", "port = 0", "",
        "[store]", f'path = "{store}"', "",
    ]
    return "\n".join(lines)


def now_utc() -> datetime:
    return datetime.now(UTC)


def event(vtn: SimVtn3, program_id: str, payloads: list[tuple[str, Any]], *, seconds: int = 120,
          start: datetime | None = None, reports: tuple[str, ...] = (), units: dict[str, str] | None = None,
          randomize_s: int | None = None, **fields: Any) -> dict[str, Any]:
    """One event with one interval carrying `payloads`, starting now (or at `start`) for `seconds`."""
    one = interval(0, payloads[0][0], payloads[0][1])
    one["payloads"] = [{"type": t, "values": [v]} for t, v in payloads]
    descriptors = [{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": t, **u}
                   for t, u in ((t, {"units": unit} if unit != "USD" else {"units": "KWH", "currency": unit})
                                for t, unit in (units or {}).items())]
    body: dict[str, Any] = {"intervalPeriod": period(start or now_utc(), timedelta(seconds=seconds),
                                                     timedelta(seconds=randomize_s) if randomize_s else None)}
    if descriptors:
        body["payloadDescriptors"] = descriptors
    if reports:
        body["reportDescriptors"] = [{"payloadType": r} for r in reports]
    return vtn.create_event(program_id, [one], **{**body, **fields})


def sent_by_ven(vtn: SimVtn3, method: str, path_end: str) -> list[Any]:
    return [r.body for r in vtn.received if r.method == method and r.path.endswith(path_end)]
