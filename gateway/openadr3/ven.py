"""The OpenADR 3 VEN: enrols, reads programs and events, stores them as domain events, reports back.

One long-lived task (`run`) that never gives up, with 2.0b's rules: any failure (VTN down, 5xx, a hanging
VTN, 401/403/404, an answer that fails the schema) is logged once when it starts and once when it ends,
retried with exponential backoff and full jitter (never so far that a VTN which comes back waits more
than max(poll period, 30 s)), and the stored events stay in force meanwhile. A round: get a token (OAuth2
client credentials), make sure the VEN object and one resource per charger, circuit and configured group
exist at the VTN, make sure the subscription exists (when asked for), read every program and event
(polling: the full list, so an event the VTN deleted while we were away is cancelled), send the report
backlog. Notifications the VTN posts to our webhook (a bearer token of ours, checked) are taken at once
the same way, one event at a time. Events go into the store before the sink hears of them, so a restart
resumes the same schedule (with the same randomized start offsets).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import random
import secrets
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from aiohttp import web
from pydantic import ValidationError

from gateway import event_lifecycle as lifecycle
from gateway.backoff import backoff_delay, unreachable_delay
from gateway.clock import utc_now
from gateway.domain import Event, EventStatus, OptState
from gateway.openadr3 import models, reports
from gateway.openadr3.link import VtnLink, VtnRefused, VtnUnreachable, schema_error
from gateway.openadr3.settings import Oadr3Settings
from gateway.openadr3.translate import BadEvent, Context, Translated, translate
from gateway.ports import EventSink, Oadr3Records, TelemetrySource
from gateway.waking import Wakeable

log = logging.getLogger("gateway.openadr3")

T = TypeVar("T")
RETURN_WITHIN_S = 30.0  # as 2.0b: a VTN back from an outage hears from us within this or one poll period
PAGE = 50  # the OpenAPI's maximum `limit`
NOTIFY_PATH = "/openadr3/notify"
MAX_NOTIFICATION_BYTES = 1_000_000


@dataclass(frozen=True, slots=True)
class Enrollment:
    """The VEN object at the VTN (the status page reads `registration_id` like 2.0b's registration)."""

    ven_id: str | None
    registration_id: str | None


class Oadr3Ven:
    def __init__(self, settings: Oadr3Settings, store: Oadr3Records, *, sink: EventSink | None = None,
                 telemetry: TelemetrySource | None = None, clock: Callable[[], datetime] = utc_now,
                 rng: random.Random | None = None, link: VtnLink | None = None) -> None:
        self.settings = settings
        self.store = store
        self.sink = sink
        self.telemetry = telemetry
        self.clock = clock
        self.rng = rng or random.Random()
        self.link = link or VtnLink(settings)
        self._db_lock = asyncio.Lock()
        self._events_lock = asyncio.Lock()
        self._nap = Wakeable()  # the wait between rounds, cut short by `wake()`
        self.resources = list(dict.fromkeys([*settings.charger_ids, *settings.resources]))
        self.context = Context(settings.ven_name, frozenset(self.resources), settings.currency,
                               settings.emergency_level)
        self.registration = Enrollment(None, None)
        self.resource_ids: dict[str, str] = {}
        self.subscriptions: dict[str, str] = {}  # program id ("" for all, 3.1.0) → subscription id
        self.programs: dict[str, models.Program] = {}
        self.callback_token = ""
        self.callback_url: str | None = None
        self._runner: web.AppRunner | None = None
        self.failures = 0
        self.polls = 0
        self.notifications = 0
        self.last_ok_at: datetime | None = None
        self.last_error: str | None = None
        self.failing_since: datetime | None = None
        self.rounds: dict[str, int] = {"ok": 0, "unreachable": 0, "refused": 0, "error": 0}
        self._refused_said: set[tuple[str, datetime]] = set()
        self._last_status: int | None = None
        self.enrolled = asyncio.Event()  # set once the VEN object and its resources exist (tests wait on it)
        if settings.allow_plain_http:
            log.warning("vtn.url is plain HTTP (allow_plain_http = true): traffic is neither encrypted nor "
                        "authenticated; use only for tests and demos")

    # ------------------------------------------------------------------------------------ plumbing

    async def _db(self, fn: Callable[..., T], *args: Any) -> T:
        async with self._db_lock:
            return await asyncio.to_thread(fn, *args)

    @property
    def ven_id(self) -> str | None:
        return self.registration.ven_id

    @property
    def poll_interval_s(self) -> float:
        return self.settings.poll_s

    @property
    def reachable(self) -> bool | None:
        if self.failing_since is not None:
            return False
        return True if self.last_ok_at is not None else None

    def wake(self) -> None:
        self._nap.wake()

    async def _sleep(self, seconds: float) -> None:
        await self._nap.sleep(seconds)

    def _failed(self, result: str, error: str) -> None:
        self.rounds[result] += 1
        self.last_error = error[:300]
        if self.failing_since is None:
            self.failing_since = self.clock()

    def unreachable_delay(self) -> float:
        s = self.settings
        return unreachable_delay(self.failures, s.backoff_initial_s, s.backoff_max_s, rng=self.rng,
                                 return_within_s=max(self.poll_interval_s, RETURN_WITHIN_S),
                                 request_timeout_s=s.request_timeout_s)

    # ---------------------------------------------------------------------------------------- run

    async def load(self) -> None:
        """What a previous run kept: our ids at the VTN, the subscriptions and the callback's token."""
        ven_id = await self._db(self.store.state, "ven_id")
        self.registration = Enrollment(ven_id, ven_id)
        resource_ids = await self._db(self.store.state, "resource_ids")
        subscriptions = await self._db(self.store.state, "subscriptions")
        self.resource_ids = json.loads(resource_ids or "{}")
        self.subscriptions = json.loads(subscriptions or "{}")
        token = await self._db(self.store.state, "callback_token")
        if token is None:
            token = secrets.token_urlsafe(24)
            await self._db(self.store.put_state, "callback_token", token, self.clock())
        self.callback_token = token

    async def run(self) -> None:
        """Forever: enrol, subscribe, poll, report; back off on failure. Cancel to stop."""
        await self.load()
        if self.settings.subscribe:
            try:
                await self._serve_callback()
            except OSError as exc:  # a port taken: polling still brings every change, only later
                log.warning("openadr3 notifications cannot listen on %s:%d (%s): polling only",
                            self.settings.callback_bind, self.settings.callback_port, exc.strerror or exc)
        try:
            while True:
                try:
                    delay = await self.step()
                except Exception:  # a bug or a full disk must not stop the VEN; the traceback helps fix it
                    self.failures += 1
                    self._failed("error", "openadr3 round failed (see the traceback in the log)")
                    delay = backoff_delay(self.failures, self.settings.backoff_initial_s,
                                          self.settings.backoff_max_s, self.rng)
                    log.exception("openadr3 round failed; retry in %.1fs", delay)
                await self._sleep(delay)
        finally:
            if self._runner is not None:
                await self._runner.cleanup()
            await self.link.close()
            await self._db(self.store.close)

    async def step(self) -> float:
        """One round with the VTN; returns how long to wait before the next one."""
        try:
            if self.store.holding():
                await self._db(self.store.flush)
            if not self.registration.ven_id or not self.enrolled.is_set():
                await self._enrol()
            await self._poll()
            if self.settings.subscribe:
                await self._subscribe()
            await self._sample()
            await self._send_reports()
        except VtnUnreachable as exc:
            self.failures += 1
            self._failed("unreachable", f"unreachable: {exc}")
            delay = self.unreachable_delay()
            if self.failures == 1:
                log.warning("vtn unreachable: %s; retry in %.1fs; stored schedule stays in force", exc, delay)
            else:
                log.debug("vtn unreachable: %s; retry in %.1fs (attempt %d)", exc, delay, self.failures)
            await self._sample()  # the backlog grows while the VTN is away
            return delay
        except VtnRefused as exc:
            self.failures += 1
            self._failed("refused", f"refused: {exc}")
            delay = backoff_delay(self.failures, self.settings.backoff_initial_s, self.settings.backoff_max_s,
                                  self.rng)
            if exc.status == 404:
                await self._forget_ids()
            if self.failures == 1 or exc.status != self._last_status:
                log.warning("vtn refused: %s; retry in %.1fs; stored schedule stays in force", exc, delay)
            self._last_status = exc.status
            await self._sample()
            return delay
        if self.failures:
            log.info("vtn reachable again after %d failed attempts", self.failures)
            self.failures = 0
        self.rounds["ok"] += 1
        self.last_ok_at, self.failing_since = self.clock(), None
        return self.poll_interval_s

    async def _forget_ids(self) -> None:
        """A 404 on one of our objects: the VTN lost it; enrol (and subscribe) again next round."""
        self.enrolled.clear()
        self.subscriptions = {}
        await self._db(self.store.put_state, "subscriptions", None, self.clock())

    # ------------------------------------------------------------------------------------ enrollment

    def _ven_body(self) -> dict[str, Any]:
        attributes = [{"type": "DESCRIPTION", "values": ["EV charging site (ev-openadr-gateway)"]}]
        if self.settings.version == "3.0.1":
            return {"venName": self.settings.ven_name, "attributes": attributes}
        return {"objectType": "VEN_VEN_REQUEST", "venName": self.settings.ven_name, "attributes": attributes}

    def _resource_body(self, name: str, ven_id: str) -> dict[str, Any]:
        attributes: list[dict[str, Any]] = []
        kw = self.settings.resource_kw.get(name)
        if kw is not None:
            attributes.append({"type": "MAX_POWER_CONSUMPTION", "values": [round(kw, 3)]})
        kind = "EV charger" if name in self.settings.charger_ids else "circuit or group of EV chargers"
        attributes.append({"type": "DESCRIPTION", "values": [f"{kind} {name}"[:128]]})
        if self.settings.version == "3.0.1":
            return {"resourceName": name, "venID": ven_id, "attributes": attributes}
        return {"objectType": "VEN_RESOURCE_REQUEST", "resourceName": name, "venID": ven_id,
                "attributes": attributes}

    def _resources_path(self, ven_id: str) -> str:
        return f"vens/{ven_id}/resources" if self.settings.version == "3.0.1" else "resources"

    async def _enrol(self) -> None:
        vens = await self.link.get_list("vens", models.Ven, {"venName": self.settings.ven_name})
        mine = next((v for v in vens if v.ven_name == self.settings.ven_name), None)
        if mine is None:
            mine = await self.link.send("POST", "vens", self._ven_body(), models.Ven)
            log.info("vtn: VEN object created: ven_id=%s ven_name=%s", mine.id, mine.ven_name)
        ven_id = mine.id
        path = self._resources_path(ven_id)
        params = {"venID": ven_id} if self.settings.version != "3.0.1" else None
        existing = {r.resource_name: r.id for r in await self.link.get_list(path, models.Resource, params)
                    if r.ven_id in (None, ven_id)}
        for name in self.resources:
            if name not in existing:
                created = await self.link.send("POST", path, self._resource_body(name, ven_id), models.Resource)
                existing[name] = created.id
        self.resource_ids = {n: existing[n] for n in self.resources}
        self.registration = Enrollment(ven_id, ven_id)
        now = self.clock()
        await self._db(self.store.put_state, "ven_id", ven_id, now)
        await self._db(self.store.put_state, "resource_ids", json.dumps(self.resource_ids), now)
        if not self.enrolled.is_set():
            log.info("enrolled with vtn (OpenADR %s): ven_id=%s resources=%d", self.settings.version, ven_id,
                     len(self.resource_ids))
        self.enrolled.set()

    # ---------------------------------------------------------------------------------- subscription

    async def _serve_callback(self) -> None:
        app = web.Application(client_max_size=MAX_NOTIFICATION_BYTES)
        app.router.add_post(NOTIFY_PATH, self._on_notification)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.callback_bind, self.settings.callback_port)
        await site.start()
        server = site._server
        sockets = getattr(server, "sockets", None) or []
        port = sockets[0].getsockname()[1] if sockets else self.settings.callback_port
        host = self.settings.callback_bind
        self.callback_url = self.settings.callback_url or f"http://{host}:{port}{NOTIFY_PATH}"
        log.info("openadr3 notifications listening url=%s", self.callback_url)

    def _subscription_body(self, program_id: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "clientName": self.settings.ven_name,
            "objectOperations": [{"objects": ["PROGRAM", "EVENT"], "operations": ["CREATE", "UPDATE", "DELETE"],
                                  "callbackUrl": self.callback_url, "bearerToken": self.callback_token}],
        }
        if program_id:
            body["programID"] = program_id
        return body

    async def _subscribe(self) -> None:
        """One subscription (3.1.0), or one per program (3.0.1 wants a programID), pointing at our webhook;
        one whose callback moved (a new port after a restart) is updated."""
        if self.callback_url is None:
            return
        wanted = [""] if self.settings.version != "3.0.1" else list(self.programs)
        stored_url = await self._db(self.store.state, "callback_url")
        changed = False
        for program_id in wanted:
            body = self._subscription_body(program_id or None)
            sid = self.subscriptions.get(program_id)
            if sid is not None and stored_url == self.callback_url:
                continue
            if sid is not None:
                try:
                    await self.link.send("PUT", f"subscriptions/{sid}", body, models.Subscription)
                    changed = True
                    continue
                except VtnRefused as exc:
                    if exc.status != 404:
                        raise
            created = await self.link.send("POST", "subscriptions", body, models.Subscription)
            self.subscriptions[program_id] = created.id
            changed = True
            log.info("vtn: subscribed to programs and events%s: subscription=%s callback=%s",
                     f" of program {program_id}" if program_id else "", created.id, self.callback_url)
        if changed or stored_url != self.callback_url:
            now = self.clock()
            await self._db(self.store.put_state, "subscriptions", json.dumps(self.subscriptions), now)
            await self._db(self.store.put_state, "callback_url", self.callback_url, now)

    async def _on_notification(self, request: web.Request) -> web.Response:
        given = request.headers.get("Authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {self.callback_token}".encode()):
            log.warning("openadr3 notification refused: %s from %s", "wrong token" if given else "no token",
                        request.remote)
            return web.json_response({"title": "Unauthorized", "status": 401}, status=401)
        try:
            body = await request.json()
            note = models.Notification.model_validate(body)
            event = models.Event.model_validate(note.object) if note.object_type == "EVENT" else None
        except (ValueError, ValidationError) as exc:
            detail = schema_error(exc) if isinstance(exc, ValidationError) else "not JSON"
            log.warning("openadr3 notification refused: bad body (%s); nothing changed", detail)
            return web.json_response({"title": "Bad Request", "status": 400, "detail": detail}, status=400)
        self.notifications += 1
        if note.object_type == "PROGRAM":
            self.wake()  # programs change rarely: read them all again
        elif event is not None:
            if event.program_id not in self.programs:
                self.wake()  # a program we have not read yet: the next round reads it and its events
            else:
                deleted = note.operation == "DELETE"
                await self._take([] if deleted else [event], complete=False, deleted=[event] if deleted else [])
        return web.json_response({"status": 200})

    # --------------------------------------------------------------------------------------- events

    async def _paged(self, path: str, model: type[Any]) -> list[Any]:
        out: list[Any] = []
        for page in range(200):  # bounded: 10,000 objects
            batch = await self.link.get_list(path, model, {"skip": str(page * PAGE), "limit": str(PAGE)})
            out.extend(batch)
            if len(batch) < PAGE:
                break
        return out

    async def _read_programs(self) -> None:
        self.programs = {p.id: p for p in await self._paged("programs", models.Program)}

    async def _poll(self) -> None:
        await self._read_programs()
        events = await self._paged("events", models.Event)
        if any(e.program_id not in self.programs for e in events):
            # A program created between the two reads: read them again, or its events would be taken as of
            # no program we are enrolled in (opted out, and not looked at again until they change).
            await self._read_programs()
        self.polls += 1
        await self._take(events, complete=True)

    def _enrolled_in(self, program: models.Program | None) -> bool:
        return not self.settings.programs or (program is not None and program.program_name in self.settings.programs)

    async def _take(self, incoming: Sequence[models.Event], *, complete: bool,
                    deleted: Sequence[models.Event] = ()) -> None:
        """Events from the VTN (the whole list when `complete`; deleted ones by notification) into the store,
        then to the sink."""
        now = self.clock()
        translated: list[tuple[Translated, models.Event]] = []
        refused: list[str] = []
        for raw in incoming:
            program = self.programs.get(raw.program_id)
            try:
                t = translate(raw, program, self.context, now)
            except BadEvent as exc:
                said = (raw.id, raw.modification_date_time)
                if said not in self._refused_said:  # once per version, not every poll
                    self._refused_said.add(said)
                    log.warning("vtn event refused: %s; nothing stored changes", exc)
                refused.append(raw.id)
                continue
            translated.append((t, raw))
        async with self._events_lock:
            stored = await self._db(self.store.events)
            overrides = await self._db(self.store.overrides)
            fresh = [t.event for t, _ in translated]
            for raw in deleted:
                old = stored.get(raw.id)
                if old is not None and old.status is not EventStatus.CANCELLED:
                    fresh.append(dataclasses.replace(old, status=EventStatus.CANCELLED,
                                                     modification_number=old.modification_number + 1))
            # Only this protocol's events are ours to cancel by absence (a 2.0b history stays as it was).
            meta = await self._db(self.store.event_meta)
            mine = {k: v for k, v in stored.items() if k in meta}
            outcome = lifecycle.reconcile(mine, fresh, now, self._draw_offset, complete_list=complete,
                                          listed=refused)
            meta_of = {t.event.event_id: (raw, t) for t, raw in translated}
            changed: list[Event] = []
            reasons: dict[str, str] = {}
            for event in outcome.changed:
                if event.event_id in meta_of and event.status is not EventStatus.CANCELLED:
                    raw, t = meta_of[event.event_id]
                    opt, reason = self._opt(event, t.targeted, self.programs.get(raw.program_id),
                                            overrides.get(event.event_id))
                    event = dataclasses.replace(event, opt=opt)
                    reasons[event.event_id] = reason
                changed.append(event)
            for event in changed:
                if event.event_id in meta_of:
                    raw, _ = meta_of[event.event_id]
                    await self._db(self.store.save_event_meta, raw.id, raw.program_id,
                                   [d.model_dump(by_alias=True, exclude_none=True)
                                    for d in raw.report_descriptors or []])
            if changed:
                await self._db(self.store.save_events, changed, now, reasons)
            for line in outcome.notes:
                log.info("%s", line.replace(" by the VTN", " (deleted by the VTN)"))
            for event in changed:  # alerts, GHG and what was left out: once per version, not once per poll
                if event.event_id not in meta_of:
                    continue
                told = meta_of[event.event_id][1]
                for line in told.notes:
                    log.log(logging.WARNING if line.startswith("ALERT_") else logging.INFO, "event=%s %s",
                            event.event_id, line)
                for line in told.dropped:
                    log.warning("event=%s payload ignored: %s", event.event_id, line)
            for event in changed:
                if event.event_id in reasons:
                    log.info("event=%s opt=%s reason=%s", event.event_id, event.opt.value, reasons[event.event_id])
            if changed and self.sink is not None:
                current = {**stored, **{e.event_id: e for e in changed}}
                self.sink.events_changed(list(current.values()), now)

    def _opt(self, event: Event, targeted: bool, program: models.Program | None,
             override: tuple[OptState, str] | None) -> tuple[OptState, str]:
        if override is not None:
            return override[0], f"operator: {override[1]}" if override[1] else "operator override"
        if not targeted:
            return OptState.OPT_OUT, "targets none of our resources"
        if not self._enrolled_in(program):
            name = program.program_name if program is not None else event.market_context
            return OptState.OPT_OUT, f"not enrolled in program {name!r}"
        return OptState.OPT_IN, "site can comply"

    def _draw_offset(self, start_after: timedelta) -> timedelta:
        return timedelta(seconds=round(self.rng.uniform(0.0, start_after.total_seconds()), 3))

    async def events(self) -> dict[str, Event]:
        return await self._db(self.store.events)

    async def set_opt(self, event_id: str, choice: OptState | None, reason: str = "") -> Event | None:
        """Operator override: opt in/out of one event (None: back to the rules). OpenADR 3 has no opt message:
        the VTN learns of it from the reports (OPERATING_STATE)."""
        async with self._events_lock:
            now = self.clock()
            events = await self._db(self.store.events)
            event = events.get(event_id)
            if event is None:
                return None
            await self._db(self.store.set_override, event_id, choice, reason, now)
            if choice is not None:
                opt, why = self._opt(event, True, None, (choice, reason))
            else:
                opt, why = OptState.OPT_IN, "back to the rules"
            updated = dataclasses.replace(event, opt=opt)
            await self._db(self.store.save_events, [updated], now, {event_id: why})
            log.info("event=%s opt=%s reason=%s", event_id, opt.value, why)
            if self.sink is not None:
                self.sink.events_changed(list({**events, event_id: updated}.values()), now)
        self.wake()
        return updated

    # -------------------------------------------------------------------------------------- reports

    async def _sample(self) -> int:
        """Take each report interval that has ended for every event with report descriptors; the rows wait
        in the store until the VTN has them."""
        if self.telemetry is None:
            return 0
        now = self.clock()
        stored = 0
        events = await self._db(self.store.events)
        for event_id, (program_id, raw, due) in (await self._db(self.store.event_meta)).items():
            event = events.get(event_id)
            if event is None or not raw or (event.status is EventStatus.CANCELLED and event.cancelled_at is None):
                continue  # no event, no report asked, or deleted before it started
            descriptors = [models.ReportDescriptor.model_validate(d) for d in raw]
            wanted, problems = reports.asked(descriptors, self.resources)
            step = self._report_step(event)
            first = event.start
            due = due or first + step
            end = event.end
            while due <= now and (end is None or due - step < end):
                if due - step >= first:
                    samples = reports.sample(wanted, self.telemetry, self.settings.resources, event_id=event_id,
                                             program_id=program_id, start=due - step, duration=step)
                    nxt = due + step
                    if now - due > step * 2:  # the sampler was not running: skip the slots missed
                        nxt = due + step * (int((now - due) / step) + 1)
                    await self._db(self.store.add_samples, event_id, samples, nxt)
                    stored += len(samples)
                    if problems and due == first + step:
                        for line in problems:
                            log.warning("event=%s %s", event_id, line)
                    due = nxt
                else:
                    due += step
        horizon = now - timedelta(days=self.settings.backlog_days)
        await self._db(self.store.prune_samples, horizon)
        return stored

    def _report_step(self, event: Event) -> timedelta:
        """The event's intervals, cut into `report_interval_s` sub-intervals when longer (a site's load is worth
        telling more often than once per hour-long price interval)."""
        durations = [i.duration for s in event.signals for i in s.intervals if i.duration > timedelta(0)]
        return min([*durations, timedelta(seconds=self.settings.report_interval_s)])

    async def _send_reports(self) -> None:
        while True:
            rows = await self._db(self.store.unsent_samples, 500)
            if not rows:
                return
            for body in reports.report_bodies(rows, client_name=self.settings.ven_name,
                                              version=self.settings.version):
                try:
                    await self.link.call("POST", "reports", body)
                except VtnRefused as exc:
                    if exc.status in (401, 403) or exc.status is None:
                        raise
                    # The VTN has said no to this report (its event gone, say): kept, it would block the rest.
                    log.warning("report for event %s refused, dropped: %s", body["eventID"], exc)
            await self._db(self.store.mark_samples_sent, [r.id for r in rows], self.clock())
            intervals = len({(r.event_id, r.start) for r in rows})
            log.log(logging.INFO if intervals > 1 else logging.DEBUG,  # a backlog is worth a line, a routine report not
                    "reports sent: %d values of %d interval(s) for %d event(s)", len(rows), intervals,
                    len({r.event_id for r in rows}))
            if len(rows) < 500:
                return

    def status_counts(self) -> dict[str, int]:
        return {"failures": self.failures, "polls": self.polls, "notifications": self.notifications}
