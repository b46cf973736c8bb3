"""The VEN: registers with the VTN, polls it, turns what it says into stored domain events, answers.

One long-lived task (`run`) that never gives up: any failure (VTN down, HTTP 500, timeout, TLS or
fingerprint failure, a VTN that no longer knows us, a message we refuse, a bug) is retried with
exponential backoff and full jitter up to `backoff_max_s` (while the VTN is unreachable, never so far
that a VTN which comes back waits more than max(poll period, RETURN_WITHIN_S) for us); a transport
failure is logged once when it starts and once when it recovers; the stored events stay in force
meanwhile. A second task samples telemetry for the VTN's report requests, reachable or not. Events are
written to SQLite (one transaction per VTN message) before the VEN answers the VTN, so an answer never
promises what a crash could forget. openleadr's client loop is not used: it stops on the first failed
registration, stores nothing and has no backoff; its message layer (build, schema, signature, parse) is.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import random
import uuid
from collections.abc import Callable, Sequence
from datetime import datetime, timedelta
from typing import Any, TypeVar

from gateway import event_lifecycle as lifecycle
from gateway.backoff import backoff_delay, unreachable_delay
from gateway.clock import utc_now
from gateway.domain import Event, EventStatus, OptState
from gateway.openadr import opt, reports
from gateway.openadr.settings import OpenAdrSettings, VtnSettings
from gateway.openadr.translate import UNIT_REFUSED, BadEvent, Translated, as_list, translate_event
from gateway.openadr.wire import Edit, VtnLink, VtnUnreachable
from gateway.openadr.xmlguard import RefusedPayload
from gateway.ports import EventSink, TelemetrySource, VenRecords
from gateway.records import PendingOpt, Registration
from gateway.waking import Wakeable

log = logging.getLogger("gateway.openadr")

T = TypeVar("T")
NOT_REGISTERED_CODES = {452, 463}  # invalid id / not registered or authorized
MAX_MESSAGES_PER_POLL = 20  # drain what the VTN queued, but bounded
# A VTN back from an outage is reached within one poll period or this long, whichever is longer: transport
# failures back off, but never so far that an operator waits minutes for a VTN that is already back.
RETURN_WITHIN_S = 30.0


class NotRegistered(Exception):
    pass


class _Reregistered(Exception):
    """The VTN cancelled our registration and we registered again: this round's polling ends."""


class Ven:
    def __init__(
        self,
        vtn: VtnSettings,
        config: OpenAdrSettings,
        store: VenRecords,
        *,
        sink: EventSink | None = None,
        telemetry: TelemetrySource | None = None,
        charger_ids: Sequence[str] = (),
        clock: Callable[[], datetime] = utc_now,
        rng: random.Random | None = None,
        link: VtnLink | None = None,
        currency: str | None = None,
    ) -> None:
        self.vtn = vtn
        self.config = config
        self.store = store
        self.sink = sink
        self.telemetry = telemetry
        self.charger_ids = tuple(charger_ids)
        self.clock = clock
        self.rng = rng or random.Random()
        self.link = link or VtnLink(vtn)
        self.currency = currency  # the tariff's ISO 4217 code: a price in another currency is refused (None: any)
        self._db_lock = asyncio.Lock()
        self._events_lock = asyncio.Lock()  # read-decide-write of stored events (VTN messages, operator opts)
        self._nap = Wakeable()  # the wait between rounds, cut short by `wake()`
        self._wake_sampler = asyncio.Event()
        self.failures = 0
        self._synced = False  # reports offered and events fetched since the last (re)registration or start
        self._sampling_broken = False
        self._unanswered: tuple[str, list[dict[str, Any]]] | None = None  # an oadrCreatedEvent not yet delivered
        self._stale_requests: set[str] = set()  # report requests of the registration just replaced
        self._opt_in_flight: int | None = None  # the opt outbox row being sent (an override must not drop it)
        self.registration = Registration(vtn.ven_id, None, None, None)
        self._echo: str | None = None  # the registrationID a pending re-registration renews
        self.deregistered = False  # the operator cancelled our registration (cancel_registration)
        self.registered = asyncio.Event()  # set after each successful registration (tests wait on it)
        self.polls = 0
        # Read-only health for the status endpoint: the last round that went through, the last failure and
        # since when rounds fail (None while they work); rounds by result for /metrics.
        self.last_ok_at: datetime | None = None
        self.last_error: str | None = None
        self.failing_since: datetime | None = None
        self.rounds: dict[str, int] = {"ok": 0, "unreachable": 0, "refused": 0, "error": 0}
        if vtn.plain_http:
            log.warning("vtn.url is plain HTTP (allow_plain_http = true): traffic is neither encrypted nor "
                        "authenticated; use only for tests and demos")

    # ------------------------------------------------------------------------------------ plumbing

    async def _db(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        async with self._db_lock:
            return await asyncio.to_thread(fn, *args, **kwargs)

    @property
    def ven_id(self) -> str | None:
        return self.registration.ven_id

    @property
    def poll_interval_s(self) -> float:
        if self.vtn.poll_s is not None:
            return self.vtn.poll_s
        return min(max(self.registration.poll_s or 10.0, 0.05), 86400.0)

    def wake(self) -> None:
        """Poll now instead of waiting out the interval (e.g. after an operator override)."""
        self._nap.wake()

    async def _sleep(self, seconds: float) -> None:
        await self._nap.sleep(seconds)

    # ---------------------------------------------------------------------------------------- run

    async def load(self) -> None:
        """Pick up the registration kept from a previous run (a restart does not re-register)."""
        stored = await self._db(self.store.registration)
        self.registration = dataclasses.replace(stored, ven_id=stored.ven_id or self.vtn.ven_id)

    async def run(self) -> None:
        """Forever: register, poll, answer, send what is pending; back off on failure. Cancel to stop."""
        await self.load()
        sampler = asyncio.create_task(self._sample_forever(), name="openadr-report-sampler")
        try:
            while True:
                try:
                    delay = await self.step()
                except Exception:  # a bug or a full disk must not stop the VEN; the traceback helps fix it
                    self.failures += 1
                    self._failed("error", "openadr round failed (see the traceback in the log)")
                    delay = backoff_delay(self.failures, self.vtn.backoff_initial_s, self.vtn.backoff_max_s,
                                          self.rng)
                    log.exception("openadr round failed; retry in %.1fs", delay)
                await self._sleep(delay)
        finally:
            sampler.cancel()
            await asyncio.gather(sampler, return_exceptions=True)
            await self.link.close()

    async def step(self) -> float:
        """One round with the VTN; returns how long to wait before the next one."""
        if self.deregistered:
            return self.poll_interval_s  # the operator cancelled our registration: silent until resume()
        try:
            if not self.registration.registration_id:
                await self._register()
            if not self._synced:
                await self._sync()
            await self._send_unanswered()
            await self._poll()
            await self._send_pending_opts()
            await self._send_reports()
        except VtnUnreachable as exc:
            self.failures += 1
            self._failed("unreachable", f"unreachable: {exc}")
            delay = self.unreachable_delay()
            level = logging.WARNING if self.failures == 1 else logging.DEBUG
            log.log(level, "vtn unreachable: %s; retry in %.1fs (attempt %d); stored schedule stays in force",
                    exc, delay, self.failures)
            return delay
        except NotRegistered as exc:
            self.failures += 1
            self._failed("refused", f"the VTN no longer knows us: {exc}")
            log.warning("vtn no longer knows us (%s): registering again", exc)
            await self._forget_registration()
            return backoff_delay(self.failures, self.vtn.backoff_initial_s, self.vtn.backoff_max_s, self.rng)
        except RefusedPayload as exc:
            # Backed off like any other failure: a VTN stuck on a bad message is not hammered every poll.
            self.failures += 1
            self._failed("refused", f"message refused: {exc}")
            delay = backoff_delay(self.failures, self.vtn.backoff_initial_s, self.vtn.backoff_max_s, self.rng)
            log.warning("vtn message refused: %s; retry in %.1fs", exc, delay)
            return delay
        if self.failures:
            log.info("vtn reachable again after %d failed attempts", self.failures)
            self.failures = 0
        self.rounds["ok"] += 1
        self.last_ok_at, self.failing_since = self.clock(), None
        return self.poll_interval_s

    def _failed(self, result: str, error: str) -> None:
        self.rounds[result] += 1
        self.last_error = error[:300]
        if self.failing_since is None:
            self.failing_since = self.clock()

    @property
    def reachable(self) -> bool | None:
        """Whether the last round with the VTN went through (None before the first one ended)."""
        if self.failing_since is not None:
            return False
        return True if self.last_ok_at is not None else None

    def return_within_s(self) -> float:
        """How soon a VTN that comes back must hear from us: one poll period or RETURN_WITHIN_S, the longer."""
        return max(self.poll_interval_s, RETURN_WITHIN_S)

    def unreachable_delay(self) -> float:
        """Backoff while the VTN is unreachable, its ceiling low enough that a VTN which comes back is reached
        within `return_within_s` even if it returns just as an attempt starts to hang (request timeout)."""
        return unreachable_delay(self.failures, self.vtn.backoff_initial_s, self.vtn.backoff_max_s,
                                 return_within_s=self.return_within_s(),
                                 request_timeout_s=self.vtn.request_timeout_s, rng=self.rng)

    async def cancel_registration(self) -> None:
        """Operator (decommissioning a site): cancel this VEN's registration at the VTN with
        oadrCancelPartyRegistration. The VEN then sends nothing until `resume()` (or a restart, which
        registers again). Raises VtnUnreachable or RefusedPayload if the VTN could not be told."""
        self.deregistered = True
        registration = self.registration.registration_id
        if registration is None:
            return
        _mtype, payload = await self._exchange(
            "EiRegisterParty", "oadrCancelPartyRegistration", request_id=uuid.uuid4().hex,
            registration_id=registration, ven_id=self.ven_id,
        )
        self._check_response("oadrCancelPartyRegistration", payload)
        log.warning("registration %s cancelled at the vtn by the operator; the VEN is silent until resumed",
                    registration)
        await self._forget_registration()

    def resume(self) -> None:
        """After `cancel_registration`: register again at the next round."""
        self.deregistered = False
        self.wake()

    async def _forget_registration(self) -> None:
        self.registration = dataclasses.replace(self.registration, registration_id=None)
        self._synced = False
        self._unanswered = None  # the sync after registering answers the VTN's whole list again
        self.registered.clear()
        await self._db(self.store.forget_registration, self.clock())

    async def _exchange(self, service: str, message_type: str, edit: Edit | None = None,
                        **payload: Any) -> tuple[str | None, dict[str, Any]]:
        """One exchange; an oadrRequestReregistration in answer (openleadr's VTN answers every message from a
        VEN it does not know with one) raises NotRegistered, so nothing is marked delivered that was not."""
        mtype, answer = await self.link.exchange(service, message_type, edit, **payload)
        if mtype == "oadrRequestReregistration" and message_type != "oadrPoll":
            raise NotRegistered(f"{message_type} answered with oadrRequestReregistration")
        return mtype, answer

    def _check_response(self, what: str, payload: dict[str, Any], *, about_us: bool = False) -> None:
        """Log a non-200 answer; `about_us`: the message names only our venID, so 452/463 means the VTN
        no longer knows us (elsewhere 452 may be about an event or report id)."""
        response = payload.get("response")
        if not isinstance(response, dict):
            return
        code = response.get("response_code")
        if about_us and code in NOT_REGISTERED_CODES:
            raise NotRegistered(f"{what}: {code} {response.get('response_description', '')}")
        if isinstance(code, int) and code != 200:
            log.warning("vtn answered %s with %s %s", what, code, response.get("response_description", ""))

    # ------------------------------------------------------------------------------- registration

    async def _register(self, echo: str | None = None) -> None:
        """Query, then create the registration. `echo`: the registrationID a re-registration renews (sent
        back so the VTN keeps it rather than issuing a new one)."""
        request_id = uuid.uuid4().hex
        mtype, payload = await self._exchange("EiRegisterParty", "oadrQueryRegistration", request_id=request_id)
        if mtype != "oadrCreatedPartyRegistration":
            raise VtnUnreachable(f"oadrQueryRegistration answered with {mtype}")
        self._echo = echo if echo is not None else self._echo
        mtype, payload = await self._create_registration(self.registration.ven_id, self._echo)
        refusal = self._registration_refusal(mtype, payload)
        if refusal and self.registration.ven_id and not self.vtn.ven_id:
            # A VTN that lost its state does not know the venID it once gave us (openleadr's answers 463 over
            # TLS): register as a new VEN. A venID pre-allocated in the config is never dropped.
            log.warning("vtn refused our venID %s (%s): registering as a new VEN", self.registration.ven_id, refusal)
            mtype, payload = await self._create_registration(None, None)
            refusal = self._registration_refusal(mtype, payload)
        if refusal:
            raise VtnUnreachable(f"registration refused: {refusal}")
        self._echo = None
        registration_id = payload.get("registration_id")
        ven_id = payload.get("ven_id")
        poll = payload.get("requested_oadr_poll_freq")
        poll_s = poll.total_seconds() if isinstance(poll, timedelta) and poll > timedelta(0) else 10.0
        self.registration = Registration(str(ven_id), str(registration_id), str(payload.get("vtn_id") or ""), poll_s)
        # Report requests belong to a registration: those the new one does not ask for again are dropped.
        self._stale_requests = {r.report_request_id for r in await self._db(self.store.report_requests)}
        await self._db(self.store.save_registration, self.registration, self.clock())
        log.info("registered with vtn: ven_id=%s registration_id=%s poll_s=%.0f", ven_id, registration_id, poll_s)
        self._synced = False
        await self._sync()

    async def _create_registration(self, ven_id: str | None,
                                   registration_id: str | None) -> tuple[str | None, dict[str, Any]]:
        return await self._exchange(
            "EiRegisterParty",
            "oadrCreatePartyRegistration",
            request_id=uuid.uuid4().hex,
            ven_name=self.vtn.ven_name,
            ven_id=ven_id,
            http_pull_model=True,
            xml_signature=self.vtn.sign_messages,
            report_only=False,
            profile_name="2.0b",
            transport_name="simpleHttp",
            transport_address=None,
            registration_id=registration_id,
        )

    @staticmethod
    def _registration_refusal(mtype: str | None, payload: dict[str, Any]) -> str | None:
        """Why an answer to oadrCreatePartyRegistration is not a registration, or None if it is one."""
        response = payload.get("response") or {}
        code = response.get("response_code", 200)
        text = f"{code} {response.get('response_description', '')}".strip()
        if mtype != "oadrCreatedPartyRegistration":
            return f"answered with {mtype} {text}"
        if code != 200:
            return text
        if not payload.get("registration_id") or not payload.get("ven_id"):
            return ("answered without a registration id or venID (is this VEN enrolled at the VTN with its name "
                    "and certificate fingerprint?)")
        return None

    async def _sync(self) -> None:
        """After registering, and after every start: offer our reports and fetch the VTN's full event list
        (which also cancels, implicitly, events it dropped while we were away)."""
        await self._register_reports()
        mtype, payload = await self._exchange(
            "EiEvent", "oadrRequestEvent", request_id=uuid.uuid4().hex, ven_id=self.ven_id, reply_limit=None
        )
        if mtype == "oadrDistributeEvent":
            await self._on_distribute(payload)
        self._synced = True
        self.registered.set()

    async def _register_reports(self) -> None:
        now = self.clock()
        offered = reports.metadata_reports(
            self.charger_ids, timedelta(seconds=self.config.report_interval_s), now
        )
        _mtype, payload = await self._exchange(
            "EiReport", "oadrRegisterReport", request_id=uuid.uuid4().hex, ven_id=self.ven_id,
            reports=offered, report_request_id=0,
        )
        self._check_response("oadrRegisterReport", payload)
        if payload.get("report_requests"):
            await self._accept_report_requests(payload["report_requests"], reply=True, supersede=True,
                                               request_id=str(payload.get("request_id") or ""))
        stale = [r for r in await self._db(self.store.report_requests) if r.report_request_id in self._stale_requests]
        for rr in stale:
            lost = await self._db(self.store.unsent_count, rr.report_request_id)
            await self._db(self.store.cancel_report_request, rr.report_request_id)
            log.warning("report request %s ended with the old registration (%d unsent readings dropped)",
                        rr.report_request_id, lost)
        self._stale_requests = set()

    # -------------------------------------------------------------------------------------- poll

    async def _poll(self) -> None:
        for _ in range(MAX_MESSAGES_PER_POLL):
            mtype, payload = await self._exchange("OadrPoll", "oadrPoll", ven_id=self.ven_id)
            self.polls += 1
            if mtype is None or mtype == "oadrResponse":
                if mtype is not None:
                    self._check_response("oadrPoll", payload, about_us=True)
                return
            try:
                await self._dispatch(mtype, payload)
            except _Reregistered:
                return  # registered anew: the next round polls under the new registration

    async def _dispatch(self, mtype: str, payload: dict[str, Any]) -> None:
        if mtype == "oadrDistributeEvent":
            await self._on_distribute(payload)
        elif mtype == "oadrRequestReregistration":
            log.info("vtn asked us to register again")
            await self._respond("EiRegisterParty", 200, "OK", None)
            previous = self.registration.registration_id
            await self._forget_registration()
            await self._register(echo=previous)  # a re-registration names the registration it renews
        elif mtype == "oadrCancelPartyRegistration":
            log.warning("vtn cancelled our registration %s: registering again", payload.get("registration_id"))
            await self._exchange(
                "EiRegisterParty", "oadrCanceledPartyRegistration",
                response={"response_code": 200, "response_description": "OK",
                          "request_id": payload.get("request_id")},
                registration_id=payload.get("registration_id"), ven_id=self.ven_id,
            )
            await self._forget_registration()
            # At once, before anything else goes out under the cancelled venID (a poll would only earn a 452).
            await self._register()
            raise _Reregistered
        elif mtype == "oadrCreateReport":
            await self._accept_report_requests(payload.get("report_requests"), reply=True,
                                               request_id=str(payload.get("request_id") or ""))
        elif mtype == "oadrCancelReport":
            await self._on_cancel_report(payload)
        elif mtype == "oadrRegisterReport":
            await self._exchange(
                "EiReport", "oadrRegisteredReport", report_requests=[], ven_id=self.ven_id,
                response={"response_code": 200, "response_description": "OK",
                          "request_id": payload.get("request_id")},
            )
        elif mtype == "oadrUpdateReport":
            await self._exchange(
                "EiReport", "oadrUpdatedReport", ven_id=self.ven_id,
                response={"response_code": 200, "response_description": "OK",
                          "request_id": payload.get("request_id")},
            )
        else:
            log.warning("vtn sent %s, which a 2.0b VEN does not handle: ignored", mtype)

    async def _respond(self, service: str, code: int, text: str, request_id: str | None) -> None:
        await self._exchange(
            service, "oadrResponse", ven_id=self.ven_id,
            response={"response_code": code, "response_description": text, "request_id": request_id},
        )

    # ------------------------------------------------------------------------------------ events

    async def _on_distribute(self, payload: dict[str, Any]) -> None:
        now = self.clock()
        request_id = str(payload.get("request_id") or "")
        resources = self.config.resources
        translated: list[Translated] = []
        bad: list[lifecycle.Verdict] = []
        for raw in as_list(payload.get("events")):
            try:
                t = translate_event(raw, ven_id=self.ven_id, resources=resources, now=now, currency=self.currency)
            except BadEvent as exc:
                log.warning("vtn event refused: %s", exc)
                event_id = str(((raw or {}).get("event_descriptor") or {}).get("event_id", "")) if isinstance(
                    raw, dict) else ""
                if event_id:
                    bad.append(lifecycle.Verdict(event_id, 0, 400, "BAD EVENT", True))
                continue
            if t.refused:
                # Never acted on in a unit misread: the event is refused as a whole, answered 460 optOut, and a
                # version stored before stays as it was (like any event we refuse).
                log.warning("event=%s refused: %s", t.event.event_id, "; ".join(t.refused))
                bad.append(lifecycle.Verdict(t.event.event_id, t.event.modification_number, UNIT_REFUSED,
                                             "SIGNAL NOT SUPPORTED", t.event.response_required))
                continue
            if not t.event.signals and t.dropped:
                # Nothing in it we act on (custom x- names, types not valid for their name): refused, so the
                # answer (460, optOut) does not promise a response the gateway will not make.
                log.warning("event=%s refused: no signal this gateway acts on (%s)", t.event.event_id,
                            "; ".join(t.dropped))
                bad.append(lifecycle.Verdict(t.event.event_id, t.event.modification_number, UNIT_REFUSED,
                                             "SIGNAL NOT SUPPORTED", t.event.response_required))
                continue
            for line in t.notes:
                log.info("event=%s %s", t.event.event_id, line)
            for line in t.dropped:
                log.warning("event=%s signal ignored: %s", t.event.event_id, line)
            translated.append(t)
        async with self._events_lock:  # an operator override in between would be overwritten
            stored = await self._db(self.store.events)
            overrides = await self._db(self.store.overrides)
            outcome = lifecycle.reconcile(
                stored, [t.event for t in translated], now, self._draw_offset, complete_list=True,
                listed=[v.event_id for v in bad],
            )
            targeted = {t.event.event_id: t.targeted for t in translated}
            changed: list[Event] = []
            reasons: dict[str, str] = {}
            for event in outcome.changed:
                if event.event_id in targeted:  # from this message: decide (again) whether we take part
                    d = opt.decide(event, self.config, targeted=targeted[event.event_id],
                                   override=overrides.get(event.event_id))
                    event = dataclasses.replace(event, opt=d.opt)
                    reasons[event.event_id] = d.reason
                changed.append(event)
            if changed:
                await self._db(self.store.save_events, changed, now, reasons)
            for line in outcome.notes:
                log.info("%s", line)
            for event in changed:
                if event.event_id in reasons:
                    log.info("event=%s opt=%s reason=%s", event.event_id, event.opt.value, reasons[event.event_id])
            current = {**stored, **{e.event_id: e for e in changed}}
            if changed and self.sink is not None:
                self.sink.events_changed(list(current.values()), now)
        await self._answer_events(request_id, [*outcome.verdicts, *bad], current)

    def _draw_offset(self, start_after: timedelta) -> timedelta:
        return timedelta(seconds=round(self.rng.uniform(0.0, start_after.total_seconds()), 3))

    async def _answer_events(
        self, request_id: str, verdicts: Sequence[lifecycle.Verdict], events: dict[str, Event]
    ) -> None:
        responses = []
        for v in verdicts:
            if not v.response_required:
                continue
            opt_type = self._answer_opt(events.get(v.event_id), v.code)
            responses.append({
                "response_code": v.code,
                "response_description": v.description if v.code != 200 else "OK",
                "request_id": request_id,
                "event_id": v.event_id,
                "modification_number": v.modification_number,
                "opt_type": opt_type.value,
            })
        if not responses:
            return
        # Kept until the VTN has it: a VTN that queued the event once will not send it again.
        self._unanswered = (request_id, responses)
        await self._send_unanswered()

    @staticmethod
    def _answer_opt(event: Event | None, code: int) -> OptState:
        """The optType that says what the gateway does with the event as stored after this message: optIn
        only while a version we act on (or a test event we acknowledge) is stored. A refused message (400,
        460) is answered for the stored version; a cancel we take is acknowledged optIn."""
        if event is None or event.opt is OptState.OPT_OUT:
            return OptState.OPT_OUT
        if code != 200 and event.status is EventStatus.CANCELLED:
            return OptState.OPT_OUT
        return OptState.OPT_IN

    async def _send_unanswered(self) -> None:
        if self._unanswered is None:
            return
        request_id, responses = self._unanswered
        try:
            mtype, payload = await self._exchange(
                "EiEvent", "oadrCreatedEvent", ven_id=self.ven_id,
                response={"response_code": 200, "response_description": "OK", "request_id": request_id},
                event_responses=responses,
            )
        except RefusedPayload:
            # An answer that cannot be built (or whose reply is refused) would block every later round: the
            # VTN gets it again with its next full list, or never. Kept only through transport failures.
            self._unanswered = None
            raise
        self._unanswered = None
        if mtype is not None:
            self._check_response("oadrCreatedEvent", payload)

    async def events(self) -> dict[str, Event]:
        return await self._db(self.store.events)

    # --------------------------------------------------------------------------------------- opts

    async def set_opt(self, event_id: str, choice: OptState | None, reason: str = "") -> Event | None:
        """Operator override: opt in/out of one event (None: back to the rules). Sent to the VTN as
        oadrCreateOpt (or oadrCancelOpt when the override is lifted); stored first, sent when reachable."""
        async with self._events_lock:
            now = self.clock()
            events = await self._db(self.store.events)
            event = events.get(event_id)
            if event is None:
                return None
            await self._db(self.store.set_override, event_id, choice, reason, now)
            override = (choice, reason) if choice is not None else None
            decision = opt.decide(event, self.config, override=override)
            updated = dataclasses.replace(event, opt=decision.opt)
            await self._db(self.store.save_events, [updated], now, {event_id: decision.reason})
            await self._db(self.store.queue_opt, updated, "" if choice is not None else "cancel", uuid.uuid4().hex, now,
                           in_flight=self._opt_in_flight)
            log.info("event=%s opt=%s reason=%s", event_id, decision.opt.value, decision.reason)
            if self.sink is not None:
                self.sink.events_changed(list({**events, event_id: updated}.values()), now)
        self.wake()
        return updated

    async def _send_pending_opts(self) -> None:
        attempted: set[int] = set()
        while True:
            # Read again each time: an override made while one opt was in flight may have replaced the rest.
            queue = [p for p in await self._db(self.store.pending_opts) if p.id not in attempted]
            if not queue:
                return
            pending = queue[0]
            attempted.add(pending.id)
            self._opt_in_flight = pending.id
            try:
                await self._send_opt(pending)
            except RefusedPayload:
                # Unsendable (an id the VTN gave us that cannot go into XML) or answered with something we
                # refuse: kept, it would block every later round. Dropped; the step logs why.
                await self._db(self.store.mark_opt_sent, pending.id, self.clock())
                raise
            finally:
                self._opt_in_flight = None

    async def _send_opt(self, pending: PendingOpt) -> None:
        if pending.reason == "cancel":
            previous = await self._db(self.store.last_sent_opt_id, pending.event_id)
            if previous is not None:
                _, payload = await self._exchange(
                    "EiOpt", "oadrCancelOpt", request_id=uuid.uuid4().hex, opt_id=previous, ven_id=self.ven_id
                )
                self._check_response("oadrCancelOpt", payload)
        else:
            events = await self._db(self.store.events)
            event = events.get(pending.event_id)
            _mtype, payload = await self._exchange(
                "EiOpt", "oadrCreateOpt",
                request_id=uuid.uuid4().hex,
                ven_id=self.ven_id,
                opt_id=pending.opt_id,
                opt_type=pending.opt.value,
                opt_reason="overrideStatus",
                created_date_time=self.clock(),
                event_id=pending.event_id,
                modification_number=pending.modification_number,
                market_context=event.market_context if event and event.market_context else None,
                targets=[{"ven_id": self.ven_id}],
            )
            self._check_response("oadrCreateOpt", payload)
        await self._db(self.store.mark_opt_sent, pending.id, self.clock())

    # ------------------------------------------------------------------------------------ reports

    async def _accept_report_requests(self, raw: Any, *, reply: bool, request_id: str,
                                      supersede: bool = False) -> None:
        """Store what the VTN asks us to report. `supersede`: asked in answer to our oadrRegisterReport, so
        a request asked again (new id, same rIDs) replaces the earlier one and takes over its backlog."""
        now = self.clock()
        metadata = [r for r in as_list(raw) if isinstance(r, dict) and str(
            (r.get("report_specifier") or {}).get("report_specifier_id", "")) == reports.METADATA_ID]
        accepted, problems = reports.parse_requests(
            [r for r in as_list(raw) if not any(r is m for m in metadata)], self.charger_ids,
            timedelta(seconds=self.config.report_interval_s),
        )
        for line in problems:
            log.warning("%s", line)
        for rr in accepted:
            await self._db(self.store.save_report_request, dataclasses.replace(rr, next_sample_at=now), now)
            moved = await self._db(self.store.supersede, rr) if supersede else 0
            when = ("once" if rr.report_back_s == reports.ONE_SHOT else
                    f"every {rr.granularity_s:.0f}s, sent every {rr.report_back_s:.0f}s")
            log.info("report request %s: %s %s%s", rr.report_request_id, ",".join(rr.r_ids), when,
                     f" (takes over {moved} unsent readings)" if moved else "")
        if reply:
            ids = [{"report_request_id": r.report_request_id} for r in accepted]
            await self._exchange(
                "EiReport", "oadrCreatedReport", ven_id=self.ven_id, pending_reports=ids,
                response={"response_code": 200, "response_description": "OK", "request_id": request_id},
            )
        self._wake_sampler.set()
        if metadata and not supersede:  # the VTN asks what we offer: answered with oadrRegisterReport
            log.info("vtn asked for our METADATA: offering our reports again")
            await self._register_reports()

    async def _on_cancel_report(self, payload: dict[str, Any]) -> None:
        ids = [str(i) for i in as_list(payload.get("report_request_id"))]
        if payload.get("report_to_follow") is True:
            await self._send_final_reports(ids)
        for request in ids:
            await self._db(self.store.cancel_report_request, request)
            log.info("report request %s cancelled by the vtn", request)
        remaining = [{"report_request_id": r.report_request_id} for r in await self._db(self.store.report_requests)]
        await self._exchange(
            "EiReport", "oadrCanceledReport", ven_id=self.ven_id, pending_reports=remaining,
            response={"response_code": 200, "response_description": "OK", "request_id": payload.get("request_id")},
        )

    async def _send_final_reports(self, request_ids: Sequence[str]) -> None:
        """reportToFollow: what these requests sampled and did not send yet goes out once more, now."""
        requests = {r.report_request_id: r for r in await self._db(self.store.report_requests)}
        rows = [r for r in await self._db(self.store.unsent_readings, 5000) if r.report_request_id in request_ids]
        if not rows:
            return
        now = self.clock()
        body, edit = reports.update_report_payload(rows, now, {k: r.granularity_s for k, r in requests.items()})
        mtype, payload = await self._exchange("EiReport", "oadrUpdateReport", edit=edit, request_id=uuid.uuid4().hex,
                                              ven_id=self.ven_id, reports=body)
        if mtype is not None:
            self._check_response("oadrUpdateReport", payload)
        await self._db(self.store.mark_readings_sent, [r.id for r in rows], now)

    async def sample_once(self) -> int:
        """Take every sample that is due; returns how many rows were stored."""
        if self.telemetry is None:
            return 0
        now = self.clock()
        stored = 0
        for rr in await self._db(self.store.report_requests):
            due = rr.next_sample_at or now
            if due > now:
                continue
            values = reports.sample(self.telemetry, rr.r_ids)
            step = timedelta(seconds=rr.granularity_s)
            # Skip missed slots rather than inventing values for them (a sampler that was not running).
            following = due + step * max(1, int((now - due) / step) + 1)
            if rr.report_back_s == reports.ONE_SHOT:
                following = now + timedelta(days=36500)  # sampled once; the request ends once it is sent
            await self._db(self.store.add_readings, rr, values, now, following)
            stored += len(values)
        horizon = now - timedelta(days=self.config.backlog_days)
        await self._db(self.store.prune_readings, horizon)
        await self._db(self.store.prune_events, horizon)
        return stored

    async def _sample_forever(self) -> None:
        failures = 0
        while True:
            self._wake_sampler.clear()
            try:
                await self.sample_once()
                requests = await self._db(self.store.report_requests)
                now = self.clock()
                waits = [max(0.05, ((r.next_sample_at or now) - now).total_seconds()) for r in requests]
                wait = min(waits, default=1.0)
                if self._sampling_broken:
                    log.info("telemetry sampling works again")
                    self._sampling_broken = False
                failures = 0
            except Exception:  # a sampler must not die with a bad reading; the traceback helps fix the source
                if not self._sampling_broken:
                    log.exception("telemetry sampling failed (logged once until it works again)")
                self._sampling_broken = True
                failures += 1  # backed off like the VTN link: a source that keeps failing is not spun on
                wait = backoff_delay(failures, self.vtn.backoff_initial_s, self.vtn.backoff_max_s, self.rng)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(wait):  # not wait_for: see `_sleep`
                    await self._wake_sampler.wait()

    async def _send_reports(self) -> None:
        now = self.clock()
        requests = {r.report_request_id: r for r in await self._db(self.store.report_requests)}
        while True:
            unsent = await self._db(self.store.unsent_readings, 500)
            # A request's readings go out once its oldest unsent one is a report-back duration old: one
            # report per report-back duration in steady state, and a backlog (after an outage or a
            # restart) at once.
            oldest: dict[str, datetime] = {}
            for r in unsent:
                oldest.setdefault(r.report_request_id, r.measured_at)
            due = [
                r for r in unsent
                if r.report_request_id in requests and (
                    now - oldest[r.report_request_id] >= timedelta(seconds=requests[r.report_request_id].report_back_s)
                    or len(unsent) >= 500
                )
            ]
            if not due:
                return
            body, edit = reports.update_report_payload(
                due, now, {k: r.granularity_s for k, r in requests.items()})
            try:
                mtype, payload = await self._exchange(
                    "EiReport", "oadrUpdateReport", edit=edit, request_id=uuid.uuid4().hex, ven_id=self.ven_id,
                    reports=body,
                )
            except RefusedPayload:
                # Cannot be built (a request id the VTN gave us that cannot go into XML), or the VTN answered
                # it (so it has it) with something we refuse: kept, these rows would block the queue forever.
                await self._db(self.store.mark_readings_sent, [r.id for r in due], now)
                raise
            if mtype is not None:
                self._check_response("oadrUpdateReport", payload)
            await self._db(self.store.mark_readings_sent, [r.id for r in due], now)
            if isinstance(payload.get("cancel_report"), dict):  # a cancel piggy-backed on oadrUpdatedReport
                await self._on_cancel_report(payload["cancel_report"])
            for request_id in {r.report_request_id for r in due}:
                if requests[request_id].report_back_s == reports.ONE_SHOT:
                    await self._db(self.store.cancel_report_request, request_id)
                    log.info("report request %s: its one report is sent", request_id)
            if len(unsent) < 500:
                return

    def status_counts(self) -> dict[str, int]:
        return {"failures": self.failures, "polls": self.polls}
