"""A demo/test VTN on openleadr's OpenADRServer: registers VENs, sends every 2.0b signal type, modifies
and cancels events, asks for re-registration, cancels registrations, requests reports and takes opts
(EiOpt, which openleadr's server does not serve by itself).

It listens on 127.0.0.1 at a port the OS picks (port 0) unless told otherwise, over HTTP or, with a
certificate, key and CA, over mutual TLS with the VEN's certificate fingerprint checked. Messages that
openleadr's server cannot queue by itself (oadrRequestReregistration, oadrCancelPartyRegistration,
oadrCreateReport, oadrCancelReport) go through a small per-VEN outbox served on the next poll.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import ssl
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from aiohttp import web
from openleadr import OpenADRServer, objects, utils
from openleadr.service import OptService, handler

log = logging.getLogger("gateway.sim.vtn")


@dataclass
class VenRecord:
    ven_id: str
    ven_name: str
    registration_id: str | None
    fingerprint: str | None = None


class SimOptService(OptService):  # type: ignore[misc]  # openleadr is untyped
    """openleadr's EiOpt service with its two handlers filled in (0.5.36 leaves them as TODO stubs)."""

    def __init__(self, vtn_id: str) -> None:
        super().__init__(vtn_id)
        self.opts: dict[str, dict[str, Any]] = {}  # opt_id → the oadrCreateOpt payload, while in force
        self.log: list[tuple[str, str]] = []  # ("create" | "cancel", opt_id), in arrival order

    @handler("oadrCreateOpt")  # type: ignore[untyped-decorator]
    async def create_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        opt_id = str(payload["opt_id"])
        self.opts[opt_id] = payload
        self.log.append(("create", opt_id))
        return "oadrCreatedOpt", {"opt_id": opt_id}

    @handler("oadrCancelOpt")  # type: ignore[untyped-decorator]
    async def cancel_opt(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        opt_id = str(payload["opt_id"])
        self.opts.pop(opt_id, None)
        self.log.append(("cancel", opt_id))
        return "oadrCanceledOpt", {"opt_id": opt_id}


@dataclass
class SimVtn:
    vtn_id: str = "SIM-VTN"
    poll_s: float = 1.0  # whole seconds: openleadr writes durations without fractions
    http_cert: str | None = None
    http_key: str | None = None
    ca_file: str | None = None
    sign_cert: str | None = None  # sign our messages (XML signature) with this certificate and key
    sign_key: str | None = None
    verify_signatures: bool = False  # require VEN messages to be signed by the registered certificate
    ven_fingerprints: dict[str, str] = field(default_factory=dict)  # ven_name → expected fingerprint
    # r_id → (granularity, report back duration) requested when a VEN registers its reports
    request_reports: dict[str, tuple[timedelta, timedelta]] = field(default_factory=dict)
    vens: dict[str, VenRecord] = field(default_factory=dict)
    opt_responses: list[tuple[str, str, str]] = field(default_factory=list)  # (ven_id, event_id, opt)
    received: list[tuple[str, datetime, float]] = field(default_factory=list)  # (r_id, dtstart, value)
    outbox: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)
    polls: int = 0
    statuses: list[tuple[str, Any, dict[str, Any]]] = field(default_factory=list)  # (r_id, dtstart, status)
    report_registrations: int = 0  # METADATA reports received (one call per report offered)

    def __post_init__(self) -> None:
        self.server = OpenADRServer(
            vtn_id=self.vtn_id,
            http_host="127.0.0.1",
            http_port=0,
            http_cert=self.http_cert,
            http_key=self.http_key,
            http_ca_file=self.ca_file,
            requested_poll_freq=timedelta(seconds=self.poll_s),
            ven_lookup=self._ven_lookup,
            cert=self.sign_cert,
            key=self.sign_key,
            verify_message_signatures=self.verify_signatures,
            show_fingerprint=False,
        )
        self.server.add_handler("on_create_party_registration", self._on_create_party_registration)
        self.server.add_handler("on_cancel_party_registration", self._on_cancel_party_registration)
        self.server.add_handler("on_register_report", self._on_register_report)
        self.server.add_handler("on_created_report", self._on_created_report)
        # openleadr's server leaves EiOpt out; served here so opts go over the wire to a real openleadr service.
        self.opt_service = SimOptService(self.vtn_id)
        self.server.services["opt_service"] = self.opt_service
        self.server.app.add_routes([web.post(f"{self.server.http_path_prefix}/EiOpt", self.opt_service.handler)])
        report_service = self.server.services["report_service"]
        self._inner_update_report = report_service.handlers["oadrUpdateReport"]
        report_service.handlers["oadrUpdateReport"] = self._update_report
        poll_service = self.server.services["poll_service"]
        self._inner_poll = poll_service.handlers["oadrPoll"]
        poll_service.handlers["oadrPoll"] = self._poll
        self._runner: web.AppRunner | None = None
        self.port = 0

    # --------------------------------------------------------------------------- server lifecycle

    @property
    def url(self) -> str:
        scheme = "https" if self.server.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}{self.server.http_path_prefix}"

    async def start(self, port: int = 0) -> str:
        self._runner = web.AppRunner(self.server.app, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        ctx: ssl.SSLContext | None = self.server.ssl_context
        site = web.TCPSite(self._runner, host="127.0.0.1", port=port, ssl_context=ctx)
        await site.start()
        server = site._server  # aiohttp has no public way to learn the port the OS picked
        assert isinstance(server, asyncio.Server)
        sockets = server.sockets
        self.port = int(sockets[0].getsockname()[1])
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # ------------------------------------------------------------------------------- registration

    def _ven_lookup(self, ven_id: str) -> dict[str, Any]:
        rec = self.vens.get(str(ven_id))
        if rec is None:
            return {}
        return {"ven_id": rec.ven_id, "ven_name": rec.ven_name, "fingerprint": rec.fingerprint,
                "registration_id": rec.registration_id}

    def _on_create_party_registration(self, payload: dict[str, Any]) -> tuple[str, str] | bool:
        name = str(payload.get("ven_name"))
        seen = payload.get("fingerprint")
        expected = self.ven_fingerprints.get(name)
        if expected is not None and seen != expected:
            log.warning("sim vtn: refused %s: fingerprint %s, expected %s", name, seen, expected)
            return False
        ven_id = str(payload.get("ven_id") or "") or next(
            (r.ven_id for r in self.vens.values() if r.ven_name == name), f"ven-{len(self.vens) + 1}"
        )
        registration_id = f"reg-{uuid.uuid4().hex[:8]}"
        self.vens[ven_id] = VenRecord(ven_id, name, registration_id, seen)
        return ven_id, registration_id

    def _on_cancel_party_registration(self, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
        rec = self.vens.get(str(payload.get("ven_id")))
        if rec is not None:
            rec.registration_id = None
        return "oadrCanceledPartyRegistration", {"registration_id": payload.get("registration_id")}

    def forget(self, ven_id: str) -> None:
        """As if the VTN lost its database: the next message from this VEN gets oadrRequestReregistration."""
        self.vens.pop(ven_id, None)

    def request_reregistration(self, ven_id: str) -> None:
        self.outbox.setdefault(ven_id, []).append(("oadrRequestReregistration", {"ven_id": ven_id}))

    def cancel_registration(self, ven_id: str) -> None:
        rec = self.vens[ven_id]
        self.outbox.setdefault(ven_id, []).append(
            ("oadrCancelPartyRegistration",
             {"request_id": uuid.uuid4().hex, "registration_id": rec.registration_id, "ven_id": ven_id})
        )
        rec.registration_id = None

    async def _poll(self, payload: dict[str, Any]) -> Any:
        self.polls += 1
        ven_id = str(payload.get("ven_id"))
        queue = self.outbox.get(ven_id)
        if queue:
            return queue.pop(0)
        return await self._inner_poll(payload)

    # ------------------------------------------------------------------------------------ events

    def add_event(
        self,
        ven_id: str,
        signals: Sequence[tuple[str, str, Sequence[float]]],
        *,
        start: datetime | None = None,
        interval: timedelta = timedelta(minutes=15),
        event_id: str | None = None,
        start_after: timedelta | None = None,
        test_event: bool = False,
        priority: int = 0,
        resource_ids: Sequence[str] = (),
        market_context: str = "http://sim.example/programs/ev",
        response_required: str = "always",
        unit: str | None = None,
    ) -> str:
        """One event with one signal per (name, type, values); values run in consecutive intervals."""
        start = start or datetime.now(UTC) + timedelta(minutes=1)
        # openleadr turns number-like ids into ints on parsing and then fails to match them: never all digits
        event_id = event_id or f"ev-{uuid.uuid4().hex[:8]}"
        event_signals = []
        for n, (name, stype, values) in enumerate(signals):
            intervals = [
                objects.Interval(dtstart=start + i * interval, duration=interval, signal_payload=float(v), uid=i)
                for i, v in enumerate(values)
            ]
            measurement = None
            if unit == "kW":
                measurement = objects.Measurement(name="powerReal", description="RealPower", unit="W", scale="k",
                                                  power_attributes=objects.PowerAttributes(50, 230, True))
            event_signals.append(objects.EventSignal(intervals=intervals, signal_name=name, signal_type=stype,
                                                     signal_id=f"{event_id}-{n}", measurement=measurement))
        total = interval * max(len(s[2]) for s in signals)
        targets: list[objects.Target] = [objects.Target(ven_id=ven_id)]
        targets += [objects.Target(resource_id=r) for r in resource_ids]
        event = objects.Event(
            event_descriptor=objects.EventDescriptor(
                event_id=event_id, modification_number=0, market_context=market_context, event_status="far",
                created_date_time=datetime.now(UTC), priority=priority, test_event=test_event,
            ),
            active_period=objects.ActivePeriod(
                dtstart=start, duration=total,
                tolerance={"startafter": start_after} if start_after else None,
            ),
            event_signals=event_signals,
            targets=targets,
            response_required=response_required,
        )
        period = event.active_period
        self.server.add_raw_event(ven_id=ven_id, event=event, callback=self._opt_callback)
        event.active_period = period  # add_raw_event rebuilds it from the intervals, dropping the tolerance
        return event_id

    def _find(self, ven_id: str, event_id: str) -> Any:
        event = utils.find_by(self.server.events.get(ven_id, []), "event_descriptor.event_id", event_id)
        if event is None:
            raise KeyError(event_id)
        return event

    def modify_event(self, ven_id: str, event_id: str, *, values: Sequence[float] | None = None,
                     start: datetime | None = None, priority: int | None = None) -> int:
        """Change an event in place and bump its modificationNumber; returns the new number."""
        event = self._find(ven_id, event_id)
        if values is not None:
            signal = event.event_signals[0]
            for interval, value in zip(signal.intervals, values, strict=False):
                interval.signal_payload = float(value)
        if start is not None:
            shift = start - event.active_period.dtstart
            event.active_period.dtstart = start
            for signal in event.event_signals:
                for interval in signal.intervals:
                    interval.dtstart = interval.dtstart + shift
        if priority is not None:
            event.event_descriptor.priority = priority
        utils.increment_event_modification_number(event)
        self.server.events_updated[ven_id] = True
        self.server.event_callbacks[event_id] = (event, self._opt_callback)
        return int(event.event_descriptor.modification_number)

    def cancel_event(self, ven_id: str, event_id: str) -> None:
        self.server.cancel_event(ven_id, event_id)
        self.server.event_callbacks[event_id] = (self._find(ven_id, event_id), self._opt_callback)

    def drop_event(self, ven_id: str, event_id: str) -> None:
        """Stop listing the event without cancelling it (the VEN must cancel it implicitly)."""
        utils.pop_by(self.server.events.get(ven_id, []), "event_descriptor.event_id", event_id)
        self.server.events_updated[ven_id] = True

    def event_ids(self, ven_id: str) -> list[str]:
        return [e.event_descriptor.event_id for e in self.server.events.get(ven_id, [])]

    def _opt_callback(self, ven_id: str, event_id: str, opt_type: str) -> None:
        self.opt_responses.append((ven_id, event_id, opt_type))

    # ------------------------------------------------------------------------------------ reports

    def _on_register_report(self, report: dict[str, Any]) -> list[tuple[Any, ...]] | None:
        self.report_registrations += 1
        wanted = []
        for rd in report.get("report_descriptions", []):
            r_id = str(rd["r_id"])
            if r_id in self.request_reports:
                granularity, back = self.request_reports[r_id]
                wanted.append((r_id, self._make_receiver(r_id), granularity, back))
        return wanted or None

    def _make_receiver(self, r_id: str) -> Any:
        def receive(values: list[tuple[datetime, float]]) -> None:
            for dtstart, value in values:
                self.received.append((r_id, dtstart, float(value)))

        return receive

    async def _update_report(self, payload: dict[str, Any]) -> Any:
        """openleadr's VTN reads only payloadFloat (a standard oadrPayloadResourceStatus raises KeyError in it):
        a status is kept whole in `statuses` and handed on as 1.0/0.0 (online; load control in force)."""
        for report in payload.get("reports") or []:
            for interval in report.get("intervals") or []:
                rp = interval.get("report_payload") or {}
                status = rp.get("payload_resource_status")
                if isinstance(status, dict) and "value" not in rp:
                    self.statuses.append((str(rp.get("r_id")), interval.get("dtstart"), status))
                    state = status.get("load_control_state") or {}
                    curtailed = any(isinstance(part, dict) and part.get("normal") is not None
                                    and part.get("current") != part.get("normal") for part in state.values())
                    online = status.get("online") is True
                    rp["value"] = float(online if rp.get("r_id") == "online" else curtailed)
        return await self._inner_update_report(payload)

    def _on_created_report(self, payload: dict[str, Any]) -> None:
        return None

    def create_report(self, ven_id: str, report_specifier_id: str, r_ids: Sequence[str],
                      granularity: timedelta, report_back: timedelta) -> str:
        """Queue an oadrCreateReport for the VEN's next poll; received values land in `received`."""
        request_id = f"rr-{uuid.uuid4().hex[:8]}"
        report_service = self.server.services["report_service"]
        for r_id in r_ids:
            report_service.report_callbacks[(request_id, r_id)] = self._make_receiver(r_id)
        spec = objects.ReportSpecifier(
            report_specifier_id=report_specifier_id, granularity=granularity, report_back_duration=report_back,
            specifier_payloads=[objects.SpecifierPayload(r_id=r, reading_type="Direct Read") for r in r_ids],
        )
        request = objects.ReportRequest(report_request_id=request_id, report_specifier=spec)
        self.outbox.setdefault(ven_id, []).append(
            ("oadrCreateReport", {"request_id": uuid.uuid4().hex, "report_requests": [dataclasses.asdict(request)],
                                  "ven_id": ven_id})
        )
        return request_id

    def cancel_report(self, ven_id: str, report_request_id: str) -> None:
        self.outbox.setdefault(ven_id, []).append(
            ("oadrCancelReport", {"request_id": uuid.uuid4().hex, "report_request_id": report_request_id,
                                  "report_to_follow": False, "ven_id": ven_id})
        )


async def serve_forever(vtn: SimVtn, port: int, *, demo_events: bool = False) -> None:
    """For `make demo`: run until cancelled; with `demo_events`, each VEN that registers gets a price
    signal for the next hour and a SIMPLE level-2 event starting a minute later for ten minutes."""
    await vtn.start(port)
    log.info("sim vtn listening on %s", vtn.url)
    served: set[str] = set()
    try:
        while True:
            await asyncio.sleep(1.0)
            for ven_id in [v for v in vtn.vens if v not in served] if demo_events else []:
                served.add(ven_id)
                now = datetime.now(UTC)
                vtn.add_event(ven_id, [("ELECTRICITY_PRICE", "price", [0.32, 0.28, 0.12, 0.10])],
                              start=now, interval=timedelta(minutes=15))
                vtn.add_event(ven_id, [("SIMPLE", "level", [2])], start=now + timedelta(minutes=1),
                              interval=timedelta(minutes=10), start_after=timedelta(seconds=30))
                log.info("sim vtn: demo events sent to %s", ven_id)
    finally:
        await vtn.stop()


def main() -> None:
    import argparse

    parser = argparse.ArgumentParser(description="Demo OpenADR 2.0b VTN (openleadr) on 127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument("--poll-s", type=float, default=5.0)
    parser.add_argument("--demo-events", action="store_true")
    tls = parser.add_argument_group("mutual TLS (all three, e.g. from `gateway certs init DIR`)")
    tls.add_argument("--cert", help="the VTN's certificate (DIR/vtn.crt)")
    tls.add_argument("--key", help="its private key (DIR/vtn.key)")
    tls.add_argument("--ca-file", help="the CA that signed VEN certificates (DIR/ca.crt)")
    tls.add_argument("--ven", action="append", default=[], metavar="NAME=FINGERPRINT",
                     help="accept this VEN only with this certificate fingerprint (repeatable)")
    args = parser.parse_args()
    given = [v for v in (args.cert, args.key, args.ca_file) if v]
    if given and len(given) != 3:
        parser.error("--cert, --key and --ca-file go together (openleadr serves plain HTTP without all three)")
    pins = {}
    for item in args.ven:
        name, sep, fp = item.partition("=")
        if not sep or not name or not fp:
            parser.error(f"--ven {item!r}: expected NAME=FINGERPRINT")
        pins[name] = fp.upper()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    logging.getLogger("openleadr").setLevel(logging.WARNING)
    try:
        vtn = SimVtn(poll_s=args.poll_s, http_cert=args.cert, http_key=args.key, ca_file=args.ca_file,
                     ven_fingerprints=pins)
    except (OSError, ssl.SSLError) as exc:
        parser.exit(2, f"error: cannot load the TLS files: {exc}\n")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve_forever(vtn, args.port, demo_events=args.demo_events))


if __name__ == "__main__":
    main()
