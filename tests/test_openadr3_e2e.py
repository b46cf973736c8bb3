"""OpenADR 3 end to end: `gateway run` with `[vtn] protocol = "3"` against the simulated 3.x VTN (in this
process, on 127.0.0.1), as an operator would see it: the VEN enrols (OAuth2, the VEN object, one resource
per charger, circuit and group), takes events by polling and by its webhook, acts on them through the same
schedule as 2.0b (the status page), reports, rides out an outage with a backlog sent once, resumes the
same schedule after a restart, and says one line about each bad input. Every body the VEN sends is
validated by the VTN against the OpenAPI file of its version (`schema_errors` stays empty)."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from support.gateway_process import Gateway, get_json, stored
from support.oadr3 import CHARGERS, CIRCUIT, event, sent_by_ven, site_config
from support.waiting import until

from gateway.sim.vtn3 import SimVtn3

pytestmark = pytest.mark.slow


@pytest.fixture(params=["3.1.0", "3.0.1"])
async def vtn(request: pytest.FixtureRequest) -> AsyncIterator[SimVtn3]:
    sim = SimVtn3(version=request.param)
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


@pytest.fixture
async def vtn31() -> AsyncIterator[SimVtn3]:
    sim = SimVtn3(version="3.1.0")
    await sim.start()
    try:
        yield sim
    finally:
        await sim.stop()


async def status_of(url: str) -> dict[str, Any]:
    doc: dict[str, Any] = await get_json(url + "api/status")
    return doc


def event_ids(doc: dict[str, Any]) -> set[str]:
    return {e["id"] for e in doc["events"]}


async def started(tmp_path: Path, vtn: SimVtn3, **kwargs: Any) -> tuple[Gateway, str, Path]:
    store = tmp_path / "gw.sqlite"
    config = tmp_path / "site.toml"
    if vtn.version == "3.0.1":
        kwargs.setdefault("token_url", f"{vtn.url}/auth/token")
    config.write_text(site_config(vtn, store, **kwargs))
    gateway = Gateway(config)
    url = await gateway.status_url()
    await gateway.line_with("enrolled with vtn")
    return gateway, url, store


async def test_enrols_takes_each_payload_and_reports(tmp_path: Path, vtn: SimVtn3) -> None:
    gateway, url, store = await started(tmp_path, vtn)
    try:
        # Enrollment: the VEN object, one resource per charger and per circuit, with their attributes.
        vens = list(vtn.objects["vens"].values())
        assert [v["venName"] for v in vens] == ["oadr3-site"]
        resources = {r["resourceName"]: r for r in vtn.objects["resources"].values()}
        assert set(resources) == {*CHARGERS, CIRCUIT}
        assert all(r["venID"] == vens[0]["id"] for r in resources.values())
        kinds = {a["type"] for a in resources["cp-1"]["attributes"]}
        assert kinds == {"MAX_POWER_CONSUMPTION", "DESCRIPTION"}
        program = vtn.create_program("dr-program")
        if vtn.version == "3.0.1":  # a subscription per program: made once the VEN has read the program
            await until(lambda: sent_by_ven(vtn, "POST", "/subscriptions"), 10, "no subscription")

        # SIMPLE level 2 → a quarter of the EV capacity (the default fractions), reported per resource.
        simple = event(vtn, program["id"], [("SIMPLE", 2)], reports=("USAGE", "DEMAND", "OPERATING_STATE"))
        doc: dict[str, Any] = {}

        async def ev_limit() -> bool:
            nonlocal doc
            doc = await status_of(url)
            return simple["id"] in event_ids(doc) and doc["site"]["ev_limit_kw"] is not None

        await until(ev_limit, 10, "the SIMPLE event is not in force")
        capacity = 3 * 3 * 230 * 32 / 1000
        assert abs(doc["site"]["ev_limit_kw"] - capacity * 0.25) < 0.5, doc["site"]
        await until(lambda: vtn.reports(), 10, "no report reached the VTN")
        report = vtn.reports()[0]
        assert report["eventID"] == simple["id"] and report["clientName"] == "oadr3-site"
        assert {r["resourceName"] for r in report["resources"]} == {*CHARGERS, CIRCUIT}
        types = {p["type"] for r in report["resources"] for i in r["intervals"] for p in i["payloads"]}
        assert types == {"USAGE", "DEMAND", "OPERATING_STATE"}

        # Changed by the VTN: now an import capacity limit of 30 kW at the site meter (a 2.0b modification).
        vtn.update_event(simple["id"], intervals=[{"id": 0, "payloads": [
            {"type": "IMPORT_CAPACITY_LIMIT", "values": [30.0]}]}],
            payloadDescriptors=[{"objectType": "EVENT_PAYLOAD_DESCRIPTOR", "payloadType": "IMPORT_CAPACITY_LIMIT",
                                 "units": "KW"}])

        async def site_limit() -> bool:
            nonlocal doc
            doc = await status_of(url)
            return bool(doc["site"]["dr_site_limit_kw"] == 30.0)

        await until(site_limit, 10, "the modified event (30 kW import limit) is not in force")

        # Each other payload type, as its 2.0b counterpart.
        cases: list[tuple[list[tuple[str, Any]], dict[str, str], tuple[str, str, float]]] = [
            ([("DISPATCH_SETPOINT", 20.0)], {"DISPATCH_SETPOINT": "KW"}, ("LOAD_DISPATCH", "setpoint", 20.0)),
            ([("DISPATCH_SETPOINT_RELATIVE", 5.0)], {"DISPATCH_SETPOINT_RELATIVE": "KW"},
             ("LOAD_DISPATCH", "delta", 5.0)),
            ([("CONTROL_LEVEL_OFFSET", 2)], {}, ("LOAD_CONTROL", "x-loadControlLevelOffset", 2.0)),
            ([("CONTROL_LEVEL_OFFSET_PERCENT", -0.3)], {"CONTROL_LEVEL_OFFSET_PERCENT": "PERCENT"},
             ("LOAD_CONTROL", "x-loadControlPercentOffset", -30.0)),
            ([("PRICE", 0.31)], {"PRICE": "USD"}, ("ELECTRICITY_PRICE", "price", 0.31)),
            ([("ALERT_GRID_EMERGENCY", "grid emergency drill")], {}, ("SIMPLE", "level", 3.0)),
        ]
        made = [(event(vtn, program["id"], payloads, units=units, priority=5), want)
                for payloads, units, want in cases]
        shown = event(vtn, program["id"], [("GHG", 412.0), ("ALERT_FLEX_ALERT", "save power 4-9 pm")])

        async def all_in() -> bool:
            nonlocal doc
            doc = await status_of(url)
            return {e["id"] for e, _ in made} | {shown["id"]} <= event_ids(doc)

        await until(all_in, 10, "not every payload type's event is stored")
        by_id = {e["id"]: e for e in doc["events"]}
        for ev, (name, kind, value) in made:
            signals = by_id[ev["id"]]["signals"]
            assert [(s["name"], s["type"], s["values"]) for s in signals] == [(name, kind, [value])], ev["id"]
        assert by_id[shown["id"]]["signals"] == []  # shown and logged, nothing acted on
        await gateway.line_with("ALERT_FLEX_ALERT: save power 4-9 pm")
        await gateway.line_with("GHG: 412.0 g/kWh")
        await gateway.line_with("ALERT_GRID_EMERGENCY: grid emergency drill (curtailed to SIMPLE level 3)")

        # Deleted by the VTN: cancelled like a 2.0b cancel (it had started: it ends now).
        vtn.delete_event(simple["id"])

        async def gone() -> bool:
            nonlocal doc
            doc = await status_of(url)
            return simple["id"] not in event_ids(doc)

        await until(gone, 10, "the deleted event is still in force")
        status = stored(store, "SELECT status FROM events WHERE event_id = ?", (simple["id"],))
        assert status == [("cancelled",)]
        polls = sent_by_ven(vtn, "GET", "/events")
        await until(lambda: len(sent_by_ven(vtn, "GET", "/events")) >= len(polls) + 3, 10)
        assert sum("ALERT_FLEX_ALERT" in line for line in gateway.lines) == 1, "an alert is told once, not every poll"
        assert vtn.schema_errors == []
        if vtn.version == "3.1.0":
            assert vtn.notifications and all(code == 200 for _, code in vtn.notifications)
        text = await gateway.terminate()
        assert "Traceback" not in text
    finally:
        gateway.close()


async def test_polls_without_a_subscription_and_refreshes_its_token(tmp_path: Path, vtn31: SimVtn3) -> None:
    vtn31.token_lifetime_s = 2  # refreshed at 80 % of it
    vtn31.notify = False
    gateway, url, _ = await started(tmp_path, vtn31, subscribe=False)
    try:
        program = vtn31.create_program("dr-program")
        ev = event(vtn31, program["id"], [("SIMPLE", 1)])
        await until(lambda: vtn31.tokens_issued >= 3, 15, "the token was not fetched again before it expired")
        doc = await status_of(url)
        assert ev["id"] in event_ids(doc)
        assert sent_by_ven(vtn31, "POST", "/subscriptions") == []
        vtn31.expire_tokens()  # the VTN forgets every token: a 401, a new token, the round goes on
        issued = vtn31.tokens_issued
        await until(lambda: vtn31.tokens_issued > issued, 10, "no new token after a 401")
        text = await gateway.terminate()
        assert "vtn refused" not in text and "Traceback" not in text
    finally:
        gateway.close()


async def test_outage_backlog_and_restart_mid_event(tmp_path: Path, vtn31: SimVtn3) -> None:
    gateway, url, store = await started(tmp_path, vtn31)
    try:
        program = vtn31.create_program("dr-program")
        ev = event(vtn31, program["id"], [("SIMPLE", 3)], seconds=600, randomize_s=4, reports=("DEMAND",))
        await until(lambda: vtn31.reports(), 15, "no report before the outage")
        await vtn31.stop()
        await gateway.line_with("vtn unreachable", 10)
        backlog = 0

        def grew() -> bool:
            nonlocal backlog
            backlog = len(stored(store, "SELECT 1 FROM oadr3_backlog WHERE sent_at IS NULL"))
            return backlog >= 3 * 4  # three report intervals, four resources

        await until(grew, 15, "no backlog kept while the VTN is away")
        before = len(vtn31.reports())
        await vtn31.start()
        await gateway.line_with("vtn reachable again", 15)
        await until(lambda: not stored(store, "SELECT 1 FROM oadr3_backlog WHERE sent_at IS NULL"), 10,
                    "the backlog was not sent once the VTN was back")
        starts = [i["intervalPeriod"]["start"] for r in vtn31.reports()[before:] for res in r["resources"]
                  for i in res["intervals"]]
        assert len(starts) >= backlog and len(starts) == len(set(starts)) * len({*CHARGERS, CIRCUIT}), \
            "each interval sent once per resource"
        assert sum("logger=gateway.openadr3 vtn unreachable" in line for line in gateway.lines) == 1, \
            "an outage is one line, not one per retry"
        doc = await status_of(url)
        start_before = next(e["start"] for e in doc["events"] if e["id"] == ev["id"])
        offset = stored(store, "SELECT start_offset_s FROM events WHERE event_id = ?", (ev["id"],))
    finally:
        gateway.kill()

    # Restart mid-event: the same schedule, with the same randomized start.
    config = tmp_path / "site.toml"
    again = Gateway(config)
    try:
        url = await again.status_url()
        doc = await status_of(url)
        assert next(e["start"] for e in doc["events"] if e["id"] == ev["id"]) == start_before
        await again.line_with("enrolled with vtn")
        assert stored(store, "SELECT start_offset_s FROM events WHERE event_id = ?", (ev["id"],)) == offset
        assert len(vtn31.objects["vens"]) == 1 and len(vtn31.objects["resources"]) == 4, "enrolled once"
        # Its webhook listens on a new port: the one subscription is moved there, not a second one made.
        await until(lambda: sent_by_ven(vtn31, "PUT", next(iter(vtn31.objects["subscriptions"]))), 10)
        assert len(vtn31.objects["subscriptions"]) == 1
        assert vtn31.schema_errors == []
        assert "Traceback" not in await again.terminate()
    finally:
        again.close()


def post(url: str, body: bytes, token: str | None) -> int:
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", **({"Authorization": f"Bearer {token}"} if token else {})})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


async def test_bad_input_is_one_line_and_changes_nothing(tmp_path: Path, vtn31: SimVtn3) -> None:
    gateway, _url, store = await started(tmp_path, vtn31)
    try:
        program = vtn31.create_program("dr-program")
        good = event(vtn31, program["id"], [("SIMPLE", 1)], seconds=600)
        await until(lambda: stored(store, "SELECT 1 FROM events WHERE event_id = ?", (good["id"],)), 10)
        rows = stored(store, "SELECT event_id, modification_number, status, body FROM events ORDER BY event_id")

        # A payload type the gateway does not know: refused with one line.
        odd = event(vtn31, program["id"], [("X_PRIVATE_SIGNAL", 7)])
        await gateway.line_with(f"vtn event refused: event {odd['id']}: no payload this gateway acts on", 10)

        # A callback with a wrong token, with no token, with a bad body.
        callback = (await gateway.line_with("openadr3 notifications listening url=")).rsplit("=", 1)[1].strip()
        note = json.dumps({"objectType": "EVENT", "operation": "DELETE", "object": vtn31.objects["events"][good["id"]]})
        assert await asyncio.to_thread(post, callback, note.encode(), "not-the-token") == 401
        assert await asyncio.to_thread(post, callback, note.encode(), None) == 401
        await gateway.line_with("openadr3 notification refused: wrong token")
        await gateway.line_with("openadr3 notification refused: no token")
        token = vtn31.objects["subscriptions"][next(iter(vtn31.objects["subscriptions"]))]["objectOperations"][0][
            "bearerToken"]
        assert await asyncio.to_thread(post, callback, b"{not json", token) == 400
        assert await asyncio.to_thread(post, callback, b'{"objectType": "EVENT", "operation": "DELETE"}', token) == 400
        await gateway.line_with("openadr3 notification refused: bad body (not JSON)")
        await gateway.line_with("openadr3 notification refused: bad body (object: Field required)")

        # The VTN answers 401 (every time), 403, 404, 500, nothing at all, a list that fails the schema: one
        # line when it starts, one when it is over.
        async def recovered() -> None:
            seen = gateway.text().count("vtn reachable again")
            await until(lambda: gateway.text().count("vtn reachable again") > seen, 10, "no recovery line")

        for fault, needle in ((401, "HTTP 401"), (403, "HTTP 403"), (404, "HTTP 404"), (500, "HTTP 500")):
            vtn31.fail_status = fault
            await gateway.line_with(needle, 10)
            vtn31.fail_status = None
            await recovered()
        vtn31.hang = True
        await gateway.line_with("no answer within 1 s", 10)
        vtn31.hang = False
        await recovered()
        vtn31.bad_events = True
        await gateway.line_with("answer fails the schema", 10)
        vtn31.bad_events = False
        await recovered()
        ven_lines = [line for line in gateway.lines if "logger=gateway.openadr3" in line]  # not the alarm's
        assert sum("HTTP 500" in line for line in ven_lines) == 1
        assert sum("answer fails the schema" in line for line in ven_lines) == 1
        after = stored(store, "SELECT event_id, modification_number, status, body FROM events ORDER BY event_id")
        assert after == rows, "nothing stored changed"
        assert vtn31.schema_errors == []
        assert "Traceback" not in await gateway.terminate()
    finally:
        gateway.close()


async def test_targets_and_programs(tmp_path: Path, vtn31: SimVtn3) -> None:
    """A target naming a group of ours limits its chargers; an event of a program the site is not enrolled in
    is stored, shown and opted out of (2.0b's market context rule)."""
    extra = '[openadr]\nmarket_contexts = ["dr-program"]\n[openadr.resources]\n"fleet" = ["cp-3"]\n'
    config_extra = extra.replace("[openadr]\n", "")  # site_config writes [openadr] itself
    gateway, url, _ = await started(tmp_path, vtn31, extra=config_extra)
    try:
        program = vtn31.create_program("dr-program")
        elsewhere = vtn31.create_program("other-program")
        for_fleet = event(vtn31, program["id"], [("DISPATCH_SETPOINT", 3.0)], units={"DISPATCH_SETPOINT": "KW"},
                          targets=["fleet"])
        other = event(vtn31, elsewhere["id"], [("SIMPLE", 3)])
        # A charger and a circuit are resources without being configured as such.
        for_cp1 = event(vtn31, program["id"], [("SIMPLE", 1)], targets=["cp-1"])
        for_panel = event(vtn31, program["id"], [("CONTROL_LEVEL_OFFSET", 2)], targets=[CIRCUIT])
        doc: dict[str, Any] = {}

        async def both() -> bool:
            nonlocal doc
            doc = await status_of(url)
            return {for_fleet["id"], other["id"], for_cp1["id"], for_panel["id"]} <= event_ids(doc)

        await until(both, 10)
        by_id = {e["id"]: e for e in doc["events"]}
        assert by_id[for_fleet["id"]]["opt"] == "optIn" and by_id[other["id"]]["opt"] == "optOut"
        assert any(seg["group_kw"] == {"fleet": 3.0} for seg in by_id[for_fleet["id"]]["timeline"])
        charger_kw = 3 * 230 * 32 / 1000  # about: the site's voltage and power factor are the config's defaults
        cp1 = [seg["group_kw"] for seg in by_id[for_cp1["id"]]["timeline"]]
        panel = [seg["group_kw"] for seg in by_id[for_panel["id"]]["timeline"]]
        assert list(cp1[0]) == ["cp-1"] and abs(cp1[0]["cp-1"] - charger_kw * 0.5) < 0.2, cp1  # level 1: half
        assert list(panel[0]) == [CIRCUIT] and panel[0][CIRCUIT] == cp1[0]["cp-1"], panel  # 2 chargers, a quarter
        assert "fleet" in {r["resourceName"] for r in vtn31.objects["resources"].values()}
        await gateway.line_with("not enrolled in program 'other-program'")
        assert "Traceback" not in await gateway.terminate()
    finally:
        gateway.close()
