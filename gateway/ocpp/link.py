"""The seam between the driver and one connected charger, whatever its OCPP version.

The version handlers (`cp16`, `cp201`) implement `Station`: the few calls the driver needs (discover
abilities, configure metering, set or clear a profile) with every outcome folded into an `Outcome`, never
an exception. `Hooks` is what the handlers tell the driver. `GuardedRouting` replaces the library's
message routing so a peer's garbage frame or bad payload costs one log line and, where the frame has a
message id, the CallError the spec asks for, and nothing else.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from ocpp import messages as ocpp_messages
from ocpp import routing
from ocpp.exceptions import NotImplementedError as NotImplementedError_
from ocpp.exceptions import NotSupportedError, OCPPError
from ocpp.messages import Call, CallError, MessageType, unpack
from ocpp.v16.enums import Action as Action16
from ocpp.v201.enums import Action as Action201
from websockets.exceptions import ConnectionClosed

from gateway.ocpp.profiles import Abilities, ProfileSpec, Version
from gateway.ocpp.state import ChargerView

log = logging.getLogger("gateway.ocpp")
# the library logs every frame at INFO: far too chatty for a site log, so it gets its own quiet logger
WIRE_LOG = logging.getLogger("gateway.ocpp.wire")
if WIRE_LOG.level == logging.NOTSET:
    WIRE_LOG.setLevel(logging.WARNING)


F = TypeVar("F", bound=Callable[..., Any])


def on(action: str) -> Callable[[F], F]:
    """The library's `on` route decorator, typed."""
    return cast(Callable[[F], F], routing.on(action))


def after(action: str) -> Callable[[F], F]:
    """The library's `after` hook decorator (runs once the answer is sent), typed."""
    return cast(Callable[[F], F], routing.after(action))


# Message ids: unique per connection is all OCPP asks. A process prefix and a counter instead of the
# library's uuid4 (one getrandom syscall per CALL, measurable at a thousand chargers).
_ID_PREFIX = uuid.uuid4().hex[:8]
_ID_COUNTER = itertools.count(1)


def next_message_id() -> str:
    return f"{_ID_PREFIX}-{next(_ID_COUNTER)}"


def validate_inline() -> None:
    """Validate payloads on the event loop instead of a thread-pool hop per message.

    Our frames are capped at `max_message_bytes`, so a schema check takes tens of microseconds; the
    library's default hands each one to a thread, which costs more than the check at fan-out time."""
    ocpp_messages.ASYNC_VALIDATION = False


@dataclass(frozen=True, slots=True)
class Outcome:
    accepted: bool
    detail: str
    round_trip_s: float = 0.0
    answered: bool = True  # False: timeout or link lost, so trying another strategy now is pointless


class Station(Protocol):
    charger_id: str
    version: Version
    view: ChargerView

    async def discover(self) -> Abilities | None:
        """What the charger takes; None when it did not answer (the default abilities are a guess that
        costs rejected profiles, so no limit goes out on them)."""
        ...

    async def configure(self, meter_interval_s: int) -> None: ...

    async def set_profile(self, spec: ProfileSpec) -> Outcome: ...

    async def clear_profile(self, profile_id: int) -> Outcome:
        """Accepted also when the charger had no such profile."""
        ...

    async def trigger_meter_values(self) -> Outcome: ...

    async def close(self) -> None: ...


class Hooks(Protocol):
    def booted(self, station: Station) -> None: ...

    def seen(self, station: Station) -> None: ...

    def updated(self, charger_id: str, measured: bool) -> None: ...

    def authorize(self, token: str) -> bool: ...


async def attempt(call: Callable[[], Awaitable[Any]], accept: Callable[[Any], str | None]) -> Outcome:
    """Run one CALL; `accept` maps the result to None (accepted) or a reason. Never raises for the peer."""
    started = time.perf_counter()
    try:
        result = await call()
    except OCPPError as exc:
        return Outcome(False, f"CallError {exc.code}: {exc.description}", time.perf_counter() - started)
    except TimeoutError:
        return Outcome(False, "no answer in time", time.perf_counter() - started, answered=False)
    except ConnectionClosed:
        return Outcome(False, "link dropped", time.perf_counter() - started, answered=False)
    rtt = time.perf_counter() - started
    reason = accept(result)
    return Outcome(reason is None, reason or "Accepted", rtt)


def status_is_accepted(result: Any) -> str | None:
    status = getattr(result, "status", None)
    return None if status == "Accepted" else f"answered {status}"


def cleared(result: Any) -> str | None:
    """ClearChargingProfile: "Unknown" (no such profile) leaves the slot as empty as "Accepted" does."""
    status = getattr(result, "status", None)
    return None if status in ("Accepted", "Unknown") else f"answered {status}"


def _unhandled(action: object, version: str) -> OCPPError:
    """Both specs: an action the receiver does not know is NotImplemented; one it knows but does not
    support is NotSupported. (The library answers the other way round for unknown names.)"""
    names = {a.value for a in (Action16 if version == "1.6" else Action201)}
    if action in names:
        return NotSupportedError(details={"cause": f"{action} is not supported by this central system"})
    return NotImplementedError_(details={"cause": f"unknown action {str(action)[:40]!r}"})


class GuardedRouting:
    """Mixin placed before the library's ChargePoint: route frames, but answer garbage as the spec says."""

    id: str
    _ocpp_version: str
    route_map: dict[str, Any]
    _response_queue: asyncio.Queue[Any]
    hooks: Hooks
    busy: int = 0  # calls from the charger being handled now

    def __init__(self, charger_id: str, connection: Any, view: ChargerView, hooks: Hooks, timeout_s: float,
                 heartbeat_s: int) -> None:
        # the library's ChargePoint (next in the MRO) with its wire log quiet, and our message ids
        super().__init__(charger_id, connection, response_timeout=timeout_s, logger=WIRE_LOG)  # type: ignore[call-arg]
        self._unique_id_generator = next_message_id
        self.charger_id = charger_id
        self.view = view
        self.hooks = hooks
        self.heartbeat_s = heartbeat_s

    def slot_of(self, spec: ProfileSpec) -> int | None:
        """Where a profile goes: connector/EVSE 0 for a station-wide one, for a TxProfile the one running its
        transaction (None: no such transaction runs)."""
        if spec.purpose != "TxProfile":
            return 0
        return next((c for c, tx in self.view.transactions.items() if tx == spec.transaction_id), None)

    async def send_profile(self, payload: Any) -> Outcome:
        # the hot path of every fan-out: the profile is built by `profiles` (its shape is tested against a
        # validating peer) and the answer is only compared with "Accepted", so the schema checks are skipped
        return await attempt(lambda: self.call(payload, suppress=False, skip_schema_validation=True),
                             status_is_accepted)

    if TYPE_CHECKING:  # provided by the library's ChargePoint that follows this mixin

        async def call(self, payload: Any, suppress: bool = True, unique_id: Any = None,
                       skip_schema_validation: bool = False) -> Any: ...

        async def _send(self, message: str) -> None: ...

        async def _handle_call(self, msg: Call) -> Any: ...

    async def route_message(self, raw_msg: str | bytes) -> None:
        try:
            msg = unpack(raw_msg)
        except OCPPError as exc:
            log.warning("ocpp charger=%s sent a malformed frame (%s): %.120r", self.id, exc.code, raw_msg)
            await self._answer_garbage(raw_msg, exc)
            return
        if msg.message_type_id == MessageType.Call:
            if msg.action != "BootNotification":
                self.hooks.seen(self)  # type: ignore[arg-type]
            self.busy += 1  # a clean stop answers this before it closes the link
            try:
                if msg.action not in self.route_map:
                    raise _unhandled(msg.action, self._ocpp_version)
                await self._handle_call(msg)
            except OCPPError as exc:
                cause = str((exc.details or {}).get("cause", exc.description))[:200]
                log.warning("ocpp charger=%s %s refused: %s %s", self.id, msg.action, exc.code, cause)
                await self._send(self._error(msg.unique_id, exc.code, cause))
            finally:
                self.busy -= 1
        elif msg.message_type_id in (MessageType.CallResult, MessageType.CallError):
            self._response_queue.put_nowait(msg)

    async def _answer_garbage(self, raw_msg: str | bytes, exc: OCPPError) -> None:
        try:
            frame = json.loads(raw_msg)
        except (ValueError, TypeError):
            frame = None
        if isinstance(frame, list) and len(frame) >= 2 and frame[0] == MessageType.Call and isinstance(frame[1], str):
            unique_id = frame[1]
        elif self._ocpp_version == "1.6":
            return  # 1.6 has no way to answer a frame without a message id
        else:
            unique_id = "-1"  # OCPP-J 2.0.1: a frame whose message id cannot be read is answered with "-1"
        code = "RpcFrameworkError" if self._ocpp_version != "1.6" and frame is None else exc.code
        await self._send(self._error(unique_id, code, str(exc.description)))

    def _error(self, unique_id: str, code: str, description: str) -> str:
        if self._ocpp_version == "1.6":  # the 1.6 spelling of two codes
            code = {"FormatViolation": "FormationViolation",
                    "OccurrenceConstraintViolation": "OccurenceConstraintViolation"}.get(code, code)
        error = CallError(unique_id=unique_id, error_code=code, error_description=description[:200], error_details={})
        return str(error.to_json())
