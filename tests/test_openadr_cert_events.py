"""Certification cases E1_1010-1080 (events) and the 2.0a-ported A_E1 event cases, driven over HTTP by a
hand-written XML VTN; and every 2.0b itemBase and siScaleCode a signal may carry, read into the gateway's
units or refused (issue 14 item 1), and the optType that always says what the gateway does (item 3).
Where a case's exact wording is not public, it is written from the 2.0b profile's conformance rules
(docs/openadr.md lists which). Every VEN message is validated against the 2.0b XSD."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from support.waiting import until
from support.xmlvtn import ITEMS, Ev, Sig, Site, XmlVtn, item_base

from gateway.config.openadr import OpenAdrSection
from gateway.domain import EventStatus, OptState, SignalName
from gateway.openadr.translate import SCALE
from gateway.schedule import ScheduleSettings, build_schedule, segment_at


@pytest.fixture
async def site(tmp_path: Path, vtn: XmlVtn) -> AsyncIterator[Site]:
    s = Site(tmp_path, vtn)
    await s.start()
    yield s
    await s.stop()


def limits(events: dict[str, Any], at: datetime | None = None) -> tuple[float | None, float | None]:
    """(site kW, EV kW) the schedule holds at `at` (now) for these stored events."""
    at = at or datetime.now(UTC)
    seg = segment_at(build_schedule(events.values(), at, ScheduleSettings(ev_capacity_kw=50.0)), at)
    return (seg.site_kw, seg.ev_kw) if seg else (None, None)


def soon(seconds: float = 3600) -> datetime:
    return datetime.now(UTC) + timedelta(seconds=seconds)


# ------------------------------------------------------------------------------------------- E1 cases


async def test_E1_1010_an_empty_distribute_event_cancels_what_was_listed_and_asks_no_answer(site: Site) -> None:
    site.vtn.publish(Ev("ev-a", [Sig("SIMPLE", "level", [2])]))
    await site.answered("ev-a")
    n = len(site.vtn.of("oadrCreatedEvent"))
    site.vtn.events = []
    site.vtn.pending = True
    await until(lambda: site.sink.events.get("ev-a") is not None
                and site.sink.events["ev-a"].status is EventStatus.CANCELLED)
    assert len(site.vtn.of("oadrCreatedEvent")) == n  # nothing to answer in an empty list
    assert limits(await site.events()) == (None, None)


async def test_E1_1020_a_price_event_is_stored_in_currency_per_kwh_and_answered(site: Site) -> None:
    site.vtn.publish(Ev("ev-price", [Sig("ELECTRICITY_PRICE", "price", [0.31, 0.12],
                                         item=item_base("currencyPerKWh", units="USD"))]))
    (answer,) = await site.answered("ev-price")
    assert (answer.code, answer.opt, answer.mod) == (200, "optIn", 0)
    signal = (await site.events())["ev-price"].signals[0]
    assert signal.unit == "USD/kWh" and [i.value for i in signal.intervals] == [0.31, 0.12]


async def test_E1_1030_a_load_dispatch_setpoint_in_watts_limits_the_site_in_kw(site: Site) -> None:
    site.vtn.publish(Ev("ev-ld", [Sig("LOAD_DISPATCH", "setpoint", [18000], item=item_base("powerReal"))]))
    (answer,) = await site.answered("ev-ld")
    assert (answer.code, answer.opt) == (200, "optIn")
    assert limits(await site.events())[0] == pytest.approx(18.0)  # 18,000 W, not 18,000 kW


async def test_E1_1040_an_event_with_a_baseline_is_accepted(site: Site) -> None:
    site.vtn.publish(Ev("ev-bl", [Sig("LOAD_DISPATCH", "setpoint", [40], item=item_base("powerReal", "k"))],
                        baseline=True))
    (answer,) = await site.answered("ev-bl")
    assert answer.code == 200 and limits(await site.events())[0] == pytest.approx(40.0)


async def test_E1_1050_two_signals_with_their_own_interval_sequences(site: Site) -> None:
    site.vtn.publish(Ev("ev-two", [Sig("SIMPLE", "level", [1, 2, 3], interval_s=60),
                                   Sig("ELECTRICITY_PRICE", "price", [0.3, 0.2], interval_s=90)]))
    await site.answered("ev-two")
    simple, price = (await site.events())["ev-two"].signals
    assert [i.value for i in simple.intervals] == [1, 2, 3]
    assert [i.duration.total_seconds() for i in price.intervals] == [90, 90]


async def test_E1_1060_simple_and_complex_signals_in_one_event(site: Site) -> None:
    site.vtn.publish(Ev("ev-mix", [
        Sig("SIMPLE", "level", [1]),
        Sig("LOAD_CONTROL", "x-loadControlCapacity", [0.4]),
        Sig("LOAD_DISPATCH", "setpoint", [60], item=item_base("powerReal", "k")),
        Sig("ELECTRICITY_PRICE", "price", [0.4], item=item_base("currencyPerKWh")),
    ]))
    await site.answered("ev-mix")
    names = [s.name for s in (await site.events())["ev-mix"].signals]
    assert names == [SignalName.SIMPLE, SignalName.LOAD_CONTROL, SignalName.LOAD_DISPATCH,
                     SignalName.ELECTRICITY_PRICE]
    # 0.4 × 50 kW
    assert limits(await site.events()) == (pytest.approx(60.0), pytest.approx(20.0))  # type: ignore[comparison-overlap]  # pytest.approx equals a float at run time


async def test_E1_1070_the_ven_asks_with_oadr_request_event_and_answers_the_list(tmp_path: Path, vtn: XmlVtn) -> None:
    vtn.events = [Ev("ev-known", [Sig("SIMPLE", "level", [1])])]
    s = Site(tmp_path, vtn)
    try:
        await s.start()
        request = vtn.of("oadrRequestEvent")[0]
        assert request.text(".//ei:venID") == "ven-1"
        (answer,) = await s.answered("ev-known")
        assert answer.code == 200 and "ev-known" in await s.events()
    finally:
        await s.stop()


async def test_E1_1075_names_are_case_sensitive_but_the_2_0a_simple_spelling_is_read(site: Site) -> None:
    site.vtn.publish(Ev("ev-lower", [Sig("simple", "level", [2])]))
    await site.answered("ev-lower")
    assert (await site.events())["ev-lower"].signals[0].name is SignalName.SIMPLE
    # "Simple" is no 2.0b signal name: the schema refuses the message, nothing is stored, polling goes on.
    wrong = site.vtn.distribute([Ev("ev-wrong", [Sig("simple", "level", [2])])]).replace(b">simple<", b">Simple<")
    site.vtn.outbox.append(wrong)
    n = len(site.vtn.of("oadrPoll"))
    await until(lambda: len(site.vtn.of("oadrPoll")) > n + 2)
    assert "ev-wrong" not in await site.events() and not site.vtn.answers_for("ev-wrong")


async def test_E1_1080_a_custom_signal_is_refused_460_and_never_acted_on(site: Site) -> None:
    site.vtn.publish(Ev("ev-x", [Sig("x-acmeCurtail", "x-loadControlCapacity", [0.1])]),
                     Ev("ev-x-and-simple", [Sig("x-acmeCurtail", "level", [1]), Sig("SIMPLE", "level", [1])]))
    (alone,) = await site.answered("ev-x")
    (mixed,) = await site.answered("ev-x-and-simple")
    assert (alone.code, alone.opt) == (460, "optOut") and "ev-x" not in await site.events()
    # Beside a signal we act on, the custom one is ignored and the event taken part in.
    assert (mixed.code, mixed.opt) == (200, "optIn")
    assert [s.name for s in (await site.events())["ev-x-and-simple"].signals] == [SignalName.SIMPLE]


# ------------------------------------------------------------------------------------ ported A_E1 cases


async def test_A_E1_0210_pending_then_active_then_completed(site: Site) -> None:
    start = datetime.now(UTC) + timedelta(seconds=1)
    site.vtn.publish(Ev("ev-seq", [Sig("SIMPLE", "level", [3], interval_s=2)], dtstart=start, status="far"))
    await site.answered("ev-seq")
    events = await site.events()
    assert limits(events, start - timedelta(seconds=0.5)) == (None, None)
    assert limits(events, start + timedelta(seconds=1))[1] == 0.0
    site.vtn.publish(Ev("ev-seq", [Sig("SIMPLE", "level", [3], interval_s=2)], dtstart=start, status="active"))
    await site.answered("ev-seq", 2)
    await until(lambda: datetime.now(UTC) > start + timedelta(seconds=2.1), 5)
    site.vtn.drop("ev-seq")  # over: the VTN stops listing it
    await until(lambda: site.sink.events.get("ev-seq") is not None
                and site.sink.events["ev-seq"].status is EventStatus.COMPLETED)


async def test_A_E1_0220_a_pending_event_modified(site: Site) -> None:
    site.vtn.publish(Ev("ev-p", [Sig("SIMPLE", "level", [1])], dtstart=soon(), status="far"))
    await site.answered("ev-p")
    site.vtn.publish(Ev("ev-p", [Sig("SIMPLE", "level", [3])], dtstart=soon(), status="far", mod=1))
    answers = await site.answered("ev-p", 2)
    assert answers[-1].mod == 1 and answers[-1].opt == "optIn"
    e = (await site.events())["ev-p"]
    assert e.modification_number == 1 and e.signals[0].intervals[0].value == 3


async def test_A_E1_0230_a_pending_event_cancelled_never_acts(site: Site) -> None:
    start = soon(2)
    site.vtn.publish(Ev("ev-pc", [Sig("SIMPLE", "level", [3])], dtstart=start, status="far"))
    await site.answered("ev-pc")
    site.vtn.publish(Ev("ev-pc", [Sig("SIMPLE", "level", [3])], dtstart=start, status="cancelled", mod=1))
    answers = await site.answered("ev-pc", 2)
    assert (answers[-1].code, answers[-1].mod) == (200, 1)
    e = (await site.events())["ev-pc"]
    assert e.status is EventStatus.CANCELLED and not e.acted_on
    assert limits(await site.events(), start + timedelta(seconds=30)) == (None, None)


async def test_A_E1_0240_an_active_event_modified_takes_effect_at_once(site: Site) -> None:
    site.vtn.publish(Ev("ev-am", [Sig("LOAD_CONTROL", "x-loadControlCapacity", [0.5])]))
    await site.answered("ev-am")
    assert limits(await site.events())[1] == pytest.approx(25.0)
    site.vtn.publish(Ev("ev-am", [Sig("LOAD_CONTROL", "x-loadControlCapacity", [0.2])], mod=1))
    await site.answered("ev-am", 2)
    assert limits(await site.events())[1] == pytest.approx(10.0)


async def test_A_E1_0250_an_active_event_cancelled_ends(site: Site) -> None:
    site.vtn.publish(Ev("ev-ac", [Sig("SIMPLE", "level", [3])]))
    await site.answered("ev-ac")
    assert limits(await site.events())[1] == 0.0
    site.vtn.publish(Ev("ev-ac", [Sig("SIMPLE", "level", [3])], status="cancelled", mod=1))
    answers = await site.answered("ev-ac", 2)
    assert (answers[-1].code, answers[-1].opt) == (200, "optIn")  # the cancel is taken: acknowledged
    assert limits(await site.events()) == (None, None)


async def test_A_E1_0260_a_new_event_may_arrive_with_a_modification_number_above_zero(site: Site) -> None:
    site.vtn.publish(Ev("ev-m5", [Sig("SIMPLE", "level", [2])], mod=5))
    (answer,) = await site.answered("ev-m5")
    assert (answer.code, answer.mod, answer.opt) == (200, 5, "optIn")
    assert (await site.events())["ev-m5"].modification_number == 5


async def test_A_E1_0270_a_test_event_is_acknowledged_and_never_acted_on(site: Site) -> None:
    site.vtn.publish(Ev("ev-test", [Sig("SIMPLE", "level", [3])], test="true"))
    (answer,) = await site.answered("ev-test")
    assert answer.code == 200
    e = (await site.events())["ev-test"]
    assert e.test_event and not e.acted_on and limits(await site.events()) == (None, None)


async def test_A_E1_0280_new_modified_and_cancelled_events_in_one_payload(site: Site) -> None:
    site.vtn.publish(Ev("ev-mod", [Sig("SIMPLE", "level", [1])]), Ev("ev-can", [Sig("SIMPLE", "level", [1])]))
    await site.answered("ev-can")
    site.vtn.publish(Ev("ev-mod", [Sig("SIMPLE", "level", [2])], mod=1),
                     Ev("ev-can", [Sig("SIMPLE", "level", [1])], mod=1, status="cancelled"),
                     Ev("ev-new", [Sig("SIMPLE", "level", [3])]))
    await site.answered("ev-new")
    events = await site.events()
    assert events["ev-mod"].modification_number == 1 and events["ev-can"].status is EventStatus.CANCELLED
    assert {a.event_id for a in site.vtn.answers[-3:]} == {"ev-mod", "ev-can", "ev-new"}
    assert limits(events)[1] == 0.0  # level 3 from the new one


async def test_A_E1_0290_limit_values_of_each_signal(site: Site) -> None:
    site.vtn.publish(
        Ev("ev-l0", [Sig("SIMPLE", "level", [0])]), Ev("ev-l3", [Sig("SIMPLE", "level", [3])], priority=2),
        Ev("ev-c0", [Sig("LOAD_CONTROL", "x-loadControlCapacity", [0.0])], priority=3),
        Ev("ev-c1", [Sig("LOAD_CONTROL", "x-loadControlCapacity", [1.0])], priority=4),
        Ev("ev-l4", [Sig("SIMPLE", "level", [4])]), Ev("ev-c2", [Sig("LOAD_CONTROL", "x-loadControlCapacity", [1.5])]),
    )
    for ok in ("ev-l0", "ev-l3", "ev-c0", "ev-c1"):
        assert (await site.answered(ok))[0].code == 200
    for bad in ("ev-l4", "ev-c2"):  # outside the signal's range: nothing left to act on
        assert ((await site.answered(bad))[0].code, (await site.answered(bad))[0].opt) == (460, "optOut")
    # Priority 1 (the highest) says level 0, "normal": it governs over the priority 2-4 curtailments.
    assert limits(await site.events()) == (None, None)
    assert {"ev-l3", "ev-c0", "ev-c1"} <= set(await site.events())


async def test_A_E1_0300_randomization_draws_once_within_startafter_and_keeps_it_across_a_restart(
    site: Site,
) -> None:
    site.vtn.publish(Ev("ev-r", [Sig("SIMPLE", "level", [2])], dtstart=soon(), startafter_s=600))
    await site.answered("ev-r")
    offset = (await site.events())["ev-r"].start_offset
    assert timedelta(0) < offset <= timedelta(minutes=10)
    await site.stop()
    site.seed = 99  # another draw would differ
    await site.start()
    assert (await site.events())["ev-r"].start_offset == offset


async def test_A_E1_0310_a_modification_keeps_the_randomized_offset(site: Site) -> None:
    start = soon()
    site.vtn.publish(Ev("ev-rm", [Sig("SIMPLE", "level", [2])], dtstart=start, startafter_s=600))
    await site.answered("ev-rm")
    offset = (await site.events())["ev-rm"].start_offset
    site.vtn.publish(Ev("ev-rm", [Sig("SIMPLE", "level", [3])], dtstart=start, startafter_s=600, mod=1))
    await site.answered("ev-rm", 2)
    assert (await site.events())["ev-rm"].start_offset == offset


async def test_A_E1_0320_an_explicit_cancel_of_an_active_event_is_randomized_with_the_same_offset(
    site: Site,
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=20)
    site.vtn.publish(Ev("ev-xr", [Sig("SIMPLE", "level", [3], interval_s=3600)], dtstart=start, startafter_s=600))
    await site.answered("ev-xr")
    e = (await site.events())["ev-xr"]
    site.vtn.publish(Ev("ev-xr", [Sig("SIMPLE", "level", [3], interval_s=3600)], dtstart=start, startafter_s=600,
                        mod=1, status="cancelled"))
    await site.answered("ev-xr", 2)
    cancelled = (await site.events())["ev-xr"]
    assert cancelled.cancelled_at is not None and cancelled.start_offset == e.start_offset
    assert cancelled.end == cancelled.cancelled_at + e.start_offset


async def test_A_E1_0330_an_implicit_cancel_is_randomized_with_the_same_offset(site: Site) -> None:
    start = datetime.now(UTC) - timedelta(minutes=20)
    site.vtn.publish(Ev("ev-ir", [Sig("SIMPLE", "level", [3], interval_s=3600)], dtstart=start, startafter_s=600))
    await site.answered("ev-ir")
    e = (await site.events())["ev-ir"]
    site.vtn.drop("ev-ir")
    await until(lambda: site.sink.events.get("ev-ir") is not None
                and site.sink.events["ev-ir"].status is EventStatus.CANCELLED)
    gone = (await site.events())["ev-ir"]
    assert gone.cancelled_at is not None and gone.end == gone.cancelled_at + e.start_offset


async def test_A_E1_0340_several_events_are_each_stored_and_answered(site: Site) -> None:
    site.vtn.publish(*(Ev(f"ev-{n}", [Sig("SIMPLE", "level", [1])], dtstart=soon(600 * n)) for n in range(1, 6)))
    await site.answered("ev-5")
    assert {a.event_id for a in site.vtn.answers} >= {f"ev-{n}" for n in range(1, 6)}
    assert len(await site.events()) == 5


async def test_A_E1_0350_an_asynchronous_opt_out_goes_out_as_oadr_create_opt(site: Site) -> None:
    site.vtn.publish(Ev("ev-opt", [Sig("SIMPLE", "level", [3])]))
    await site.answered("ev-opt")
    out = await site.ven.set_opt("ev-opt", OptState.OPT_OUT, "site open day")
    assert out is not None and not out.acted_on
    await until(lambda: site.vtn.of("oadrCreateOpt"))
    sent = site.vtn.of("oadrCreateOpt")[0]
    assert sent.text("ei:optType") == "optOut" and sent.text(".//ei:eventID") == "ev-opt"
    assert limits(await site.events()) == (None, None)


async def test_A_E1_0360_an_event_for_another_ven_is_opted_out_and_not_acted_on(site: Site) -> None:
    site.vtn.publish(Ev("ev-other", [Sig("SIMPLE", "level", [3])], targets=[("venID", "someone-else")]),
                     Ev("ev-res", [Sig("SIMPLE", "level", [3])], targets=[("resourceID", "not-ours")]))
    for eid in ("ev-other", "ev-res"):
        (answer,) = await site.answered(eid)
        assert (answer.code, answer.opt) == (200, "optOut")
    assert limits(await site.events()) == (None, None)


async def test_A_E1_0370_an_event_of_a_program_we_are_not_in_is_opted_out(tmp_path: Path, vtn: XmlVtn) -> None:
    s = Site(tmp_path, vtn, OpenAdrSection(ev_capacity_kw=50.0, market_contexts=("http://utility.example/a",)))
    try:
        await s.start()
        vtn.publish(Ev("ev-mc", [Sig("SIMPLE", "level", [3])], market_context="http://utility.example/b"))
        (answer,) = await s.answered("ev-mc")
        assert (answer.code, answer.opt) == (200, "optOut") and limits(await s.events()) == (None, None)
    finally:
        await s.stop()


async def test_A_E1_0380_an_unknown_event_arriving_cancelled_is_acknowledged_and_ignored(site: Site) -> None:
    site.vtn.publish(Ev("ev-ghost", [Sig("SIMPLE", "level", [3])], status="cancelled", mod=2))
    (answer,) = await site.answered("ev-ghost")
    assert answer.code == 200 and "ev-ghost" not in await site.events()


async def test_A_E1_0390_valid_and_invalid_events_in_one_payload(site: Site) -> None:
    site.vtn.publish(
        Ev("ev-good", [Sig("LOAD_DISPATCH", "setpoint", [30], item=item_base("powerReal", "k"))]),
        Ev("ev-bad-unit", [Sig("LOAD_DISPATCH", "setpoint", [30], item=item_base("current"))]),
        Ev("ev-far-future", [Sig("SIMPLE", "level", [1])], dtstart=datetime(9999, 1, 1, tzinfo=UTC)),
    )
    assert (await site.answered("ev-good"))[0].code == 200
    assert (await site.answered("ev-bad-unit"))[0].code == 460
    assert (await site.answered("ev-far-future"))[0].code == 400
    assert set(await site.events()) == {"ev-good"} and limits(await site.events())[0] == pytest.approx(30.0)


async def test_A_E1_0400_a_lower_modification_number_is_answered_450_and_ignored(site: Site) -> None:
    site.vtn.publish(Ev("ev-seq2", [Sig("SIMPLE", "level", [2])], mod=3))
    await site.answered("ev-seq2")
    site.vtn.publish(Ev("ev-seq2", [Sig("SIMPLE", "level", [0])], mod=1))
    answers = await site.answered("ev-seq2", 2)
    assert (answers[-1].code, answers[-1].mod) == (450, 1)
    assert (await site.events())["ev-seq2"].signals[0].intervals[0].value == 2


# --------------------------------------------------- issue 14 item 3: the answer says what the gateway does


async def test_an_event_listed_again_after_an_implicit_cancel_is_in_force_again_and_answered_opt_in(
    site: Site,
) -> None:
    site.vtn.publish(Ev("ev-back", [Sig("SIMPLE", "level", [3], interval_s=3600)]))
    await site.answered("ev-back")
    assert limits(await site.events())[1] == 0.0
    site.vtn.drop("ev-back")
    await until(lambda: site.sink.events.get("ev-back") is not None
                and site.sink.events["ev-back"].status is EventStatus.CANCELLED)
    assert limits(await site.events()) == (None, None)
    site.vtn.publish(Ev("ev-back", [Sig("SIMPLE", "level", [3], interval_s=3600)]))  # same modificationNumber
    answers = await site.answered("ev-back", 2)
    assert answers[-1].opt == "optIn"
    assert limits(await site.events())[1] == 0.0  # and it is acted on, as the answer says


async def test_every_answer_matches_what_the_gateway_does(site: Site) -> None:
    """optIn exactly for the events the schedule acts on (test events acknowledged aside)."""
    site.vtn.publish(
        Ev("ev-in", [Sig("SIMPLE", "level", [1])]),
        Ev("ev-not-ours", [Sig("SIMPLE", "level", [1])], targets=[("venID", "other")]),
        Ev("ev-watts-as-amps", [Sig("LOAD_DISPATCH", "setpoint", [16], item=item_base("current"))]),
        Ev("ev-custom", [Sig("x-acme", "level", [1])]),
    )
    await site.answered("ev-custom")
    events = await site.events()
    for answer in site.vtn.answers:
        event = events.get(answer.event_id)
        acting = event is not None and event.acted_on
        assert (answer.opt == "optIn") == acting, answer


# ------------------------------------------------------------------------- issue 14 item 1: every unit


LIMIT_OK = {"powerReal": 1.0}  # factor to W
LIMIT_REFUSED = [n for n in ITEMS if n not in ("powerReal", "energyReal")]


async def test_every_item_base_and_scale_of_a_limit_is_read_in_kw_or_refused(site: Site) -> None:
    """LOAD_DISPATCH setpoint and delta, LOAD_CONTROL setpoint: powerReal (W or J/s) and energyReal (Wh over
    the interval) at every siScaleCode become kW; every other itemBase the schema allows is refused 460."""
    expect: dict[str, float | None] = {}
    events = []
    for scale, factor in SCALE.items():
        for units in ("W", "J/s"):
            eid = f"p-{scale}-{units.replace('/', '')}"
            events.append(Ev(eid, [Sig("LOAD_DISPATCH", "setpoint", [18], item=item_base("powerReal", scale, units))],
                             dtstart=soon()))
            expect[eid] = 18 * factor / 1000
        eid = f"e-{scale}"  # 18 x Wh per 15 min = 72 x W on average
        events.append(Ev(eid, [Sig("LOAD_DISPATCH", "delta", [-18], interval_s=900,
                                   item=item_base("energyReal", scale))], dtstart=soon()))
        expect[eid] = -18 * factor / 1000 * 4
        eid = f"lc-{scale}"
        events.append(Ev(eid, [Sig("LOAD_CONTROL", "x-loadControlSetpoint", [18],
                                   item=item_base("powerReal", scale))], dtstart=soon()))
        expect[eid] = 18 * factor / 1000
    for name in LIMIT_REFUSED:
        for scale in ("none", "k"):
            eid = f"x-{name}-{scale}"
            events.append(Ev(eid, [Sig("LOAD_DISPATCH", "setpoint", [18], item=item_base(name, scale))],
                             dtstart=soon()))
            expect[eid] = None
    site.vtn.publish(*events)
    await until(lambda: {a.event_id for a in site.vtn.answers} >= set(expect), 10, "every answer")
    stored = await site.events()
    answers = {a.event_id: a for a in site.vtn.answers}
    for eid, kw in expect.items():
        if kw is None:
            assert (answers[eid].code, answers[eid].opt) == (460, "optOut"), eid
            assert eid not in stored, eid
        else:
            assert answers[eid].code == 200, eid
            signal = stored[eid].signals[0]
            assert signal.unit == "kW" and signal.intervals[0].value == pytest.approx(kw, rel=1e-9), eid


async def test_every_item_base_and_scale_of_a_price_is_read_or_refused(tmp_path: Path, vtn: XmlVtn) -> None:
    s = Site(tmp_path, vtn)
    try:
        await s.start(currency="USD")
        expect: dict[str, tuple[float, str] | None] = {}
        events = []
        for scale, factor in SCALE.items():
            for sig_name, sig_type, base, per in (("ELECTRICITY_PRICE", "price", "currencyPerKWh", "kWh"),
                                                  ("ENERGY_PRICE", "priceRelative", "currencyPerKWh", "kWh"),
                                                  ("DEMAND_CHARGE", "price", "currencyPerKW", "kW")):
                eid = f"{sig_name}-{sig_type}-{scale}"
                events.append(Ev(eid, [Sig(sig_name, sig_type, [0.25], item=item_base(base, scale))], dtstart=soon()))
                expect[eid] = (0.25 * factor, f"USD/{per}")
        for eid, sig_name, base, units in (("kw-price", "ELECTRICITY_PRICE", "currencyPerKW", "USD"),
                                           ("plain-currency", "ELECTRICITY_PRICE", "currency", "USD"),
                                           ("watts-price", "ELECTRICITY_PRICE", "powerReal", None),
                                           ("euro-price", "ELECTRICITY_PRICE", "currencyPerKWh", "EUR"),
                                           ("kwh-demand", "DEMAND_CHARGE", "currencyPerKWh", "USD")):
            events.append(Ev(eid, [Sig(sig_name, "price", [0.25], item=item_base(base, units=units))], dtstart=soon()))
            expect[eid] = None
        vtn.publish(*events)
        await until(lambda: {a.event_id for a in vtn.answers} >= set(expect), 10, "every answer")
        stored = await s.events()
        answers = {a.event_id: a for a in vtn.answers}
        for eid, want in expect.items():
            if want is None:
                assert (answers[eid].code, answers[eid].opt, eid in stored) == (460, "optOut", False), eid
            else:
                signal = stored[eid].signals[0]
                assert signal.intervals[0].value == pytest.approx(want[0], rel=1e-9) and signal.unit == want[1], eid
    finally:
        await s.stop()
