"""The status page's HTML, rendered on the server from the status document: the whole page for `GET /`, and
its live part alone for each update the page's script receives over server-sent events.

Everything in the site's time zone. From the top: the health and the alarms in force (since when, what it
means, what to do), the site's load against its limit on one basis (and which limit binds), a chart over
15 min, 1 h or 24 h, load against limit per circuit and phase conductor as bars, a card per charger (kW
and A, session energy, what it said it is, online and last seen, its limit and the reason in words), the
DR events as a timeline with their limits in kW, the meters, the VTN, the store and the clock. The page is
readable without its script (a snapshot); with it, it stays live and offers the operator's writes.
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta, tzinfo
from typing import Any
from zoneinfo import ZoneInfo

Point = tuple[datetime, float | None, float | None]  # when, site load kW, limit kW
PlanPoint = tuple[datetime, datetime, float]  # a plan slot's start and end, planned site kW
WINDOWS = {"15m": timedelta(minutes=15), "1h": timedelta(hours=1), "24h": timedelta(hours=24)}
DEFAULT_WINDOW = "1h"
PLAN_AHEAD = timedelta(hours=2)

STYLE = """
:root{--ok:#1a7f37;--warn:#9a6700;--bad:#cf222e;--mute:#57606a;--line:#d0d7de}
*{box-sizing:border-box}body{font-family:system-ui,sans-serif;margin:0;padding:.8em;max-width:1200px;color:#1f2328}
h1{font-size:1.4em;margin:.2em 0}h2{font-size:1.1em;margin:1.2em 0 .4em}
.muted{color:var(--mute)}.badge{display:inline-block;padding:.1em .6em;border-radius:1em;color:#fff;font-weight:600}
.ok{background:var(--ok)}.degraded{background:var(--warn)}.failing{background:var(--bad)}.unknown{background:var(--mute)}
.alarm{border-left:.4em solid var(--warn);background:#fff8c5;padding:.4em .8em;margin:.4em 0}
.alarm.critical{border-color:var(--bad);background:#ffebe9}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(16em,1fr));gap:.6em}
.card{border:1px solid var(--line);border-radius:.5em;padding:.6em}.card h3{margin:0 0 .3em;font-size:1em}
.big{font-size:1.5em;font-weight:600}.warn{color:var(--warn)}.bad{color:var(--bad)}.good{color:var(--ok)}
.bar{position:relative;height:1.1em;background:#eaeef2;border-radius:.2em;margin:.15em 0}
.bar>span{position:absolute;left:0;top:0;bottom:0;border-radius:.2em;background:#2f81f7}
.bar>span.over{background:var(--bad)}.bar>i{position:absolute;top:-.15em;bottom:-.15em;border-left:2px solid #000}
.row{display:flex;gap:.5em;align-items:center}.row>.lbl{width:7em;flex:none}.row>.bar{flex:1}
.row>.num{width:12em;flex:none;text-align:right;font-variant-numeric:tabular-nums}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid var(--line);padding:.25em .4em;text-align:left}
.tl{position:relative;height:1.6em;background:#f6f8fa;border-radius:.2em}
.tl>span{position:absolute;top:0;bottom:0;background:#fb8f44;color:#000;font-size:.8em;overflow:hidden;
white-space:nowrap;padding:0 .2em;border-right:1px solid #fff}.tl>span.off{background:#d0d7de}
nav a{margin-right:.8em}nav a.on{font-weight:700;text-decoration:none;color:#000}
svg{width:100%;height:auto;max-height:260px}button{margin:.1em}
#conn{position:fixed;right:.5em;bottom:.5em;font-size:.8em}
@media (max-width:600px){body{padding:.4em}.row>.lbl{width:4.5em}.row>.num{width:7em}}
"""


def zone_of(status: dict[str, Any]) -> tzinfo:
    try:
        return ZoneInfo(str(status.get("site", {}).get("timezone") or "UTC"))
    except (KeyError, ValueError):
        return UTC


def esc(value: object) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:g}"
    return html.escape(str(value))


def local(value: object, zone: tzinfo, fmt: str = "%H:%M:%S") -> str:
    """An ISO time in the site's zone, for people; anything else as it is."""
    if not isinstance(value, str):
        return esc(value)
    try:
        return datetime.fromisoformat(value).astimezone(zone).strftime(fmt)
    except ValueError:
        return esc(value)


def ago(value: object, now: datetime) -> str:
    if not isinstance(value, str):
        return "never"
    try:
        seconds = (now - datetime.fromisoformat(value)).total_seconds()
    except ValueError:
        return esc(value)
    if seconds < 90:
        return f"{max(0, round(seconds))} s ago"
    if seconds < 5400:
        return f"{round(seconds / 60)} min ago"
    return f"{seconds / 3600:.1f} h ago"


# ------------------------------------------------------------------------------------------------ the chart


def _planned(planned: Sequence[PlanPoint], start: datetime, end: datetime) -> list[tuple[datetime, float]]:
    out: list[tuple[datetime, float]] = []
    for begin, finish, kw in sorted(planned):
        begin, finish = max(begin, start), min(finish, end)
        if finish > begin:
            out += [(begin, kw), (finish, kw)]
    return out


def chart_svg(points: Sequence[Point], planned: Sequence[PlanPoint] = (), *, now: datetime | None = None,
              span: timedelta = WINDOWS[DEFAULT_WINDOW], zone: tzinfo = UTC, width: int = 720,
              height: int = 220) -> str:
    """Site load (line) against the limit in force (dashed step line) over `span` up to now, then the
    planned site power (dotted, for a third of the span up to two hours), as SVG scaled to its box. The
    window is fixed: a gateway that started a minute ago draws a minute at the right scale."""
    pad = 36
    if not points:
        return (f'<svg id="chart" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg">'
                f'<text x="{pad}" y="{height // 2}">collecting data…</text></svg>')
    t1 = now or points[-1][0]
    t0 = t1 - span
    points = [p for p in points if t0 <= p[0] <= t1]
    ahead = min(PLAN_AHEAD, span / 3)
    plan = _planned(planned, t1, t1 + ahead)
    t_end = t1 + ahead if plan else t1
    values = [v for _, load, limit in points for v in (load, limit) if v is not None] + [v for _, v in plan]
    top = max([*values, 1.0]) * 1.1
    total = max((t_end - t0).total_seconds(), 1.0)

    def x(at: datetime) -> float:
        return pad + (width - 2 * pad) * (at - t0).total_seconds() / total

    def y(value: float) -> float:
        return height - pad - (height - 2 * pad) * value / top

    def line(pairs: Sequence[tuple[datetime, float]]) -> str:
        return " ".join(f"{x(at):.1f},{y(v):.1f}" for at, v in pairs)

    load = line([(at, v) for at, v, _ in points if v is not None])
    limit = line([(at, v) for at, _, v in points if v is not None])
    axis = height - pad
    fmt = "%H:%M" if span <= timedelta(hours=2) else "%a %H:%M"
    ticks = [(t0, "start"), (t1, "middle" if plan else "end")] + ([(t_end, "end")] if plan else [])
    labels = "".join(f'<text x="{x(at):.1f}" y="{axis + 16}" font-size="11" text-anchor="{anchor}">'
                     f'{at.astimezone(zone).strftime(fmt)}{" now" if at == t1 else ""}</text>'
                     for at, anchor in ticks)
    legend = ""
    for n, (name, colour, dash) in enumerate((("load", "#1f77b4", ""), ("limit", "#d62728", "6 4"),
                                              ("planned", "#2ca02c", "2 3"))):
        lx = width - pad - 270 + 90 * n
        dashes = f' stroke-dasharray="{dash}"' if dash else ""
        legend += (f'<line x1="{lx}" y1="{pad - 14}" x2="{lx + 24}" y2="{pad - 14}" stroke="{colour}" '
                   f'stroke-width="2"{dashes}/><text x="{lx + 30}" y="{pad - 10}" font-size="12" '
                   f'fill="{colour}">{name}</text>')
    grid = ""
    for quarter in range(5):
        value = top * quarter / 4
        gy = y(value)
        if quarter:
            grid += f'<line x1="{pad}" y1="{gy:.1f}" x2="{width - pad}" y2="{gy:.1f}" stroke="#eee"/>'
        grid += f'<text x="{pad - 4}" y="{gy:.1f}" font-size="11" text-anchor="end" dy="4">{value:.3g}</text>'
    now_x = x(t1)
    return (
        f'<svg id="chart" viewBox="0 0 {width} {height}" xmlns="http://www.w3.org/2000/svg" role="img" '
        f'aria-label="site load against the limit">'
        f'<line x1="{pad}" y1="{axis}" x2="{width - pad}" y2="{axis}" stroke="#888"/>'
        f'<line x1="{pad}" y1="{pad}" x2="{pad}" y2="{axis}" stroke="#888"/>'
        f'<line x1="{now_x:.1f}" y1="{pad}" x2="{now_x:.1f}" y2="{axis}" stroke="#ccc" stroke-dasharray="2 2"/>'
        f'<text x="{pad - 4}" y="{pad - 14}" font-size="11" text-anchor="end">kW</text>{grid}{labels}'
        f'<polyline id="load" fill="none" stroke="#1f77b4" stroke-width="2" points="{load}"/>'
        f'<polyline id="limit" fill="none" stroke="#d62728" stroke-width="2" stroke-dasharray="6 4" '
        f'points="{limit}"/>'
        f'<polyline id="plan" fill="none" stroke="#2ca02c" stroke-width="2" stroke-dasharray="2 3" '
        f'points="{line(plan)}"/>{legend}</svg>'
    )


# ------------------------------------------------------------------------------------------------ the parts


def _alarms(status: dict[str, Any], zone: tzinfo, now: datetime) -> str:
    alarms = status.get("alarms") or []
    if not alarms:
        return '<div id="alarms"></div>'
    items = "".join(
        f'<div class="alarm {esc(a["severity"])}" data-key="{esc(a["key"])}"><b>{esc(a["severity"])}: '
        f'{esc(a["key"])}</b> <span class="muted">since {local(a["since"], zone, "%H:%M:%S")} '
        f'({ago(a["since"], now)})</span><br>{esc(a["message"])}'
        + (f'<br><i>What to do:</i> {esc(a["action"])}' if a.get("action") else "") + "</div>"
        for a in alarms)
    return f'<div id="alarms">{items}</div>'


def _bar(value: float | None, limit: float, label: str, number: str) -> str:
    top = max(limit, value or 0.0, 1e-9) * 1.05
    width = 0.0 if value is None else 100.0 * value / top
    over = " over" if value is not None and value > limit + 1e-6 else ""
    return (f'<div class="row"><span class="lbl">{esc(label)}</span><div class="bar">'
            f'<span class="{over.strip()}" style="width:{width:.1f}%"></span>'
            f'<i style="left:{100.0 * limit / top:.1f}%"></i></div><span class="num">{number}</span></div>')


def _site(status: dict[str, Any]) -> str:
    site = status["site"]
    load, limit = site.get("load_kw"), site.get("limit_kw")
    state = site.get("load_state", "measured")
    if load is None and state in ("stale", "unreachable", "faulty"):
        load_text = (f'<span class="bad">unknown: meter {esc(state)}</span></div><span class="muted">counted on '
                     f'the worst case ({esc(site.get("non_ev_counted_kw"))} kW besides the EVs)</span><div>')
    else:
        load_text = f'{esc(load)} kW' + (' <span class="muted">(estimated)</span>' if state == "estimated" else "")
    cause = f'<br><span class="muted">set by {esc(site.get("limit_cause"))}</span>' if site.get("limit_cause") else ""
    ev_limit = f"{esc(site['ev_limit_kw'])} kW" if site.get("ev_limit_kw") is not None else "none"
    bar = _bar(load, float(limit), "site", f"{esc(load)} / {esc(limit)} kW") if limit is not None else ""
    return (f'<div class="cards" id="site"><div class="card"><h3>Site load</h3><div class="big" id="load-kw">'
            f'{load_text}</div></div><div class="card"><h3>Limit in force</h3><div class="big" id="limit-kw">'
            f'{esc(limit)} kW</div>{cause}</div><div class="card"><h3>EVs</h3><div class="big">'
            f'{esc(site.get("ev_kw"))} kW</div><span class="muted">DR EV limit: {ev_limit}</span></div></div>{bar}')


def _circuits(status: dict[str, Any]) -> str:
    circuits = status.get("circuits") or []
    if not circuits:
        return ""
    rows = ""
    for c in circuits:
        source = {"meter": "metered", "estimate": "chargers + non-EV estimate",
                  "meter down": '<span class="bad">meter down: load unknown, counted on the worst case</span>'
                  }.get(c.get("source", ""), "metered" if c.get("measured") else "estimated")
        rows += (f'<h3 style="margin:.6em 0 .1em;font-size:.95em">{esc(c["id"])} '
                 f'<span class="muted">({source})</span></h3>')
        for p in c["phases"]:
            if p["load_a"] is None and p.get("counted_a") is not None:
                text = f'unknown (counted {esc(p["counted_a"])}) / {esc(p["limit_a"])} A'
            else:
                text = f'{esc(p["load_a"])} / {esc(p["limit_a"])} A'
            rows += _bar(p["load_a"], p["limit_a"], p["phase"], text)
    return f'<h2>Per circuit and phase conductor</h2><div id="circuits">{rows}</div>'


def _chargers(status: dict[str, Any], zone: tzinfo, now: datetime, writes: bool) -> str:
    cards = ""
    paused = set((status.get("operator") or {}).get("paused") or ())
    for e in status["evses"]:
        online = e.get("online", e.get("state") not in ("offline", "unknown"))
        seen = e.get("last_seen")
        status_text = ('<span class="good">online</span>' if online
                       else '<span class="bad">offline</span>') + f' <span class="muted">last seen {ago(seen, now)}'
        status_text += f' ({local(seen, zone)})</span>' if seen else "</span>"
        ident = " ".join(str(v) for v in (e.get("vendor"), e.get("model")) if v)
        ident += f" fw {e['firmware']}" if e.get("firmware") else ""
        ack = e.get("acknowledged")
        ack_text = {True: "acknowledged", False: '<span class="warn">not acknowledged</span>',
                    None: "nothing sent yet"}[ack]
        over = ' <span class="bad">drawing above it</span>' if e.get("over_limit") else ""
        kw = e.get("power_kw")
        control = ""
        if writes:
            action = "resume" if e["id"] in paused else "pause"
            control = f'<button data-action="{action}" data-id="{esc(e["id"])}">{action}</button>'
        plugged = "car plugged in" if e.get("plugged", e.get("connected")) else "no car"
        solar = ((status.get("pv") or {}).get("chargers") or {}).get(e["id"])
        if solar:
            set_by = f' <span class="muted">({esc(solar["set_by"])})</span>'
            why = f' · {esc(solar["reason"])}' if solar.get("reason") else ""
            plugged += f'<br><span class="mode">mode <b>{esc(solar["mode"])}</b>{set_by}{why}</span>'
        cards += (
            f'<div class="card charger" data-id="{esc(e["id"])}"><h3>{esc(e["id"])} <span class="muted">'
            f'{esc(e.get("protocol"))}{" · " + esc(ident) if ident else ""}</span></h3>{status_text}<br>'
            f'{plugged}, {esc(e.get("state"))}<div class="big">{esc(kw) if kw is not None else "0"} kW · '
            f'{esc(e.get("current_a")) if e.get("current_a") is not None else "0"} A</div>'
            f'limit <b>{esc(e.get("limit_a"))} A</b> ({ack_text}){over}'
            f'<br>session: {esc(e.get("session_kwh")) if e.get("session_kwh") is not None else "–"} kWh'
            + (f'<br><span class="muted">without the gateway: falls back to {esc(e["fallback_a"])} A</span>'
               if e.get("fallback_a") is not None else "") +
            f'<br><span class="why">{esc(e.get("reason_text") or e.get("reason"))}</span>'
            f'<br><span class="muted">{esc(e.get("reason"))}</span> {control}</div>')
    return f'<h2>Chargers</h2><div class="cards" id="chargers">{cards}</div>'


def _event_label(e: dict[str, Any]) -> str:
    return "; ".join(f"{s['name']} {s['type']} {', '.join(f'{v:g}' for v in s['values'])}" for s in e["signals"])


def _events(status: dict[str, Any], zone: tzinfo, now: datetime, writes: bool) -> str:
    events = status.get("events") or []
    if not events:
        return '<h2>DR events</h2><p id="events">none in force or coming</p>'
    ends = [datetime.fromisoformat(e["end"]) for e in events if e.get("end")]
    horizon = max([now + timedelta(hours=1), *ends])
    span = (horizon - now).total_seconds()
    groups = {"active": "In force", "in force, not acted on": "In force, not acted on (opted out or a test)",
              "upcoming": "Upcoming"}
    out = ""
    for phase, title in groups.items():
        chosen = [e for e in events if e.get("phase", "active" if e.get("active") else "upcoming") == phase]
        if not chosen:
            continue
        rows = ""
        for e in chosen:
            pieces = ""
            for seg in e.get("timeline") or []:
                start = max(datetime.fromisoformat(seg["start"]), now)
                end = datetime.fromisoformat(seg["end"])
                if end <= now:
                    continue
                left = 100.0 * (start - now).total_seconds() / span
                width = 100.0 * (end - start).total_seconds() / span
                what = []
                if seg.get("site_kw") is not None:
                    what.append(f"site ≤ {seg['site_kw']:g} kW")
                if seg.get("ev_kw") is not None:
                    what.append(f"EVs ≤ {seg['ev_kw']:g} kW")
                what += [f"{k} ≤ {v:g} kW" for k, v in (seg.get("group_kw") or {}).items()]
                if seg.get("price") is not None and not what:
                    what.append(f"price {seg['price']:g}")
                label = ", ".join(what)
                off = " off" if phase != "active" and e.get("opt") == "optOut" else ""
                pieces += (f'<span class="{off.strip()}" style="left:{left:.1f}%;width:{width:.1f}%" '
                           f'title="{esc(label)} {local(seg["start"], zone, "%H:%M")}–'
                           f'{local(seg["end"], zone, "%H:%M")}">{esc(label)}</span>')
            levels = sorted({f"EVs ≤ {seg['ev_kw']:g} kW" if seg.get("ev_kw") is not None else
                             f"site ≤ {seg['site_kw']:g} kW" for seg in e.get("timeline") or []
                             if seg.get("ev_kw") is not None or seg.get("site_kw") is not None})
            kw_text = f" → {', '.join(levels)}" if levels else ""
            end_text = local(e["end"], zone, "%H:%M") if e.get("end") else "until cancelled"
            opt = ""
            if writes:
                choice = "optIn" if e.get("opt") == "optOut" else "optOut"
                opt = (f'<button data-action="opt" data-id="{esc(e["id"])}" data-opt="{choice}">'
                       f'{"opt in" if choice == "optIn" else "opt out"}</button>')
            rows += (f'<div class="event" data-id="{esc(e["id"])}"><b>{esc(e["id"])}</b> '
                     f'{local(e["start"], zone, "%H:%M")}–{end_text} · {esc(_event_label(e))}{esc(kw_text)} · opt '
                     f'{esc(e.get("opt"))}{" (test)" if e.get("test") else ""} {opt}'
                     f'<div class="tl">{pieces}</div></div>')
        out += f'<h3 style="font-size:.95em">{title}</h3>{rows}'
    axis = (f'<div class="muted" style="display:flex;justify-content:space-between;font-size:.8em">'
            f'<span>now {now.astimezone(zone):%H:%M}</span><span>{horizon.astimezone(zone):%a %H:%M}</span></div>')
    return f'<h2>DR events</h2><div id="events">{out}{axis}</div>'


def _components(status: dict[str, Any], zone: tzinfo, now: datetime) -> str:
    vtn = status["vtn"]
    rows = ""
    if vtn.get("configured"):
        state = vtn.get("state", "ok")
        reach = {True: "reachable", False: "unreachable", None: "not reached yet"}[vtn.get("reachable", True)]
        detail = f"{reach}, registered: {'yes' if vtn['registered'] else 'no'}, last poll {ago(vtn['last_poll'], now)}"
        if vtn.get("failing_since"):
            detail += f", failing since {local(vtn['failing_since'], zone)}: {esc(vtn.get('last_error'))}"
        rows += (f'<tr id="vtn"><td>VTN {esc(vtn.get("ven_id"))}</td><td><span class="badge {state}">{state}'
                 f'</span></td><td>{detail}</td></tr>')
    else:
        rows += '<tr id="vtn"><td>VTN</td><td>–</td><td>not configured</td></tr>'
    for m in status.get("meters") or []:
        state = {"fresh": "ok", "faulty": "failing", "unknown": "unknown"}.get(m["state"], "failing")
        detail = f"{esc(m['state'])}, last reading {ago(m['last_reading'], now)}"
        if m.get("stale_since"):
            detail += f", stale since {local(m['stale_since'], zone)}"
        if m.get("detail"):
            detail += f": {esc(m['detail'])}"
        rows += (f'<tr class="meter" data-id="{esc(m["id"])}"><td>meter {esc(m["id"])} ({esc(m["circuit"])})</td>'
                 f'<td><span class="badge {state}">{esc(m["state"])}</span></td><td>{detail}</td></tr>')
    store = status.get("store")
    if store:
        size = f"{store['size_bytes'] / 1e6:.1f} MB" if store.get("size_bytes") is not None else "–"
        rows += (f'<tr id="store"><td>store</td><td><span class="badge {store["state"]}">{store["state"]}</span></td>'
                 f'<td>{"writable" if store.get("writable") else esc(store.get("error"))}, {size}, last write '
                 f'{ago(store.get("last_write"), now)}</td></tr>')
    clock = status.get("clock")
    if clock:
        rows += (f'<tr id="clock"><td>clock</td><td><span class="badge {clock["state"]}">{clock["state"]}</span></td>'
                 f'<td>stepped {clock["stepped_s"]:+g} s since start</td></tr>')
    loop = status["loop"]
    rows += (f'<tr><td>control loop</td><td></td><td>{loop["decisions"]} decisions, last '
             f'{ago(loop.get("last_decision"), now)}, tick {esc(loop.get("tick_s"))} s</td></tr>')
    return f'<h2>Components</h2><table id="components">{rows}</table>'


def _solar(status: dict[str, Any]) -> str:
    """PV, the grid point and the surplus handed to the EVs, when the site has solar configured."""
    pv = status.get("pv") or {}
    if not pv.get("grid_meter") and not pv.get("inverters"):
        return ""

    def kw(key: str) -> str:
        value = pv.get(key)
        return "–" if value is None else f"{value:.2f}"

    grid = f"grid import <b>{kw('import_kw')} kW</b>, export <b>{kw('export_kw')} kW</b>"
    line = (f'<p id="pv">Solar: PV <b>{kw("pv_kw")} kW</b>, {grid}, surplus {kw("surplus_kw")} kW, '
            f'to the EVs <b>{kw("handed_kw")} kW</b>')
    if pv.get("battery_kw"):
        line += f", battery discharging {kw('battery_kw')} kW (not surplus)"
    if pv.get("import_cap_kw") is not None:
        line += f"; grid import capped at {esc(pv['import_cap_kw'])} kW"
    if pv.get("no_surplus_because"):
        line += f'; <span class="warn">no surplus known: {esc(pv["no_surplus_because"])}</span>'
    return line + ".</p>"


def render_live(status: dict[str, Any], points: Sequence[Point], planned: Sequence[PlanPoint] = (), *,
                window: str = DEFAULT_WINDOW, writes: bool = False) -> str:
    """The part of the page that changes: everything under the header."""
    zone = zone_of(status)
    now = datetime.fromisoformat(status["now"]) if isinstance(status.get("now"), str) else datetime.now(UTC)
    health = (status.get("health") or {}).get("state", "ok")
    operator = status.get("operator") or {}
    operator_line = ""
    if operator.get("cap_kw") is not None or operator.get("paused"):
        parts = []
        if operator.get("cap_kw") is not None:
            until = f" until {local(operator['cap_until'], zone)}" if operator.get("cap_until") else " until lifted"
            parts.append(f"site cap <b>{esc(operator['cap_kw'])} kW</b>{until}")
        if operator.get("paused"):
            parts.append(f"paused: {esc(', '.join(operator['paused']))}")
        operator_line = f'<p id="operator">Operator: {"; ".join(parts)}.</p>'
    demand = status.get("demand") or {}
    demand_line = ""
    if demand.get("charge_per_kw") is not None:
        demand_line = (f'<p id="demand">Demand charge {esc(demand["charge_per_kw"])}/kW: month\'s peak so far '
                       f'<b>{esc(demand.get("month_peak_kw"))} kW</b>, site held under '
                       f'{esc(demand.get("peak_target_kw"))} kW.</p>')
    nav = "".join(f'<a href="?window={w}" class="{"on" if w == window else ""}">{w}</a>' for w in WINDOWS)
    demand_line += _solar(status)
    chart = chart_svg(points, planned, now=now, span=WINDOWS.get(window, WINDOWS[DEFAULT_WINDOW]), zone=zone)
    return (
        f'<p><span class="badge {health}" id="health">{health}</span> '
        f'<span class="muted">{now.astimezone(zone):%Y-%m-%d %H:%M:%S %Z}</span></p>'
        f'{_alarms(status, zone, now)}{_site(status)}{operator_line}{demand_line}'
        f'<h2>Load and limit</h2><nav>{nav}</nav>{chart}'
        f'{_circuits(status)}{_chargers(status, zone, now, writes)}{_events(status, zone, now, writes)}'
        f'{_components(status, zone, now)}'
    )


def render_page(status: dict[str, Any], points: Sequence[Point], planned: Sequence[PlanPoint] = (), *,
                window: str = DEFAULT_WINDOW, writes: bool = False) -> str:
    name = html.escape(status["site"]["name"])
    controls = ""
    if writes:
        controls = (
            '<details id="controls"><summary>Operator controls</summary>'
            '<p><label>Token <input id="token" type="password" autocomplete="off" size="24"></label> '
            '<span class="muted">(kept in this tab only)</span></p>'
            '<p><label>Site cap <input id="cap-kw" type="number" min="0.1" step="0.1" size="6"> kW</label> '
            '<label>for <input id="cap-min" type="number" min="1" step="1" size="5"> min</label> '
            '<button data-action="cap">set cap</button> <button data-action="uncap">lift cap</button></p>'
            '<p id="answer" class="muted"></p></details>')
    live = render_live(status, points, planned, window=window, writes=writes)
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>{name}: gateway status</title><style>{STYLE}</style></head>
<body><h1>{name}</h1>{controls}
<main id="live" data-window="{html.escape(window)}">{live}</main>
<span id="conn" class="muted">snapshot</span>
<script src="/static/page.js" defer></script>
</body></html>
"""


SCRIPT = r"""
"use strict";
(function () {
  const live = document.getElementById("live");
  const conn = document.getElementById("conn");
  const params = new URLSearchParams(location.search);
  const source = new EventSource("/api/stream?window=" + encodeURIComponent(params.get("window") || ""));
  source.addEventListener("page", function (msg) {
    const data = JSON.parse(msg.data);
    live.innerHTML = data.html;
    document.title = (data.health !== "ok" ? "[" + data.health + "] " : "") + data.title;
    conn.textContent = "live";
  });
  source.onerror = function () { conn.textContent = "reconnecting…"; };
  const token = document.getElementById("token");
  if (token) { token.value = sessionStorage.getItem("gateway-token") || ""; }
  function say(text) { const a = document.getElementById("answer"); if (a) { a.textContent = text; } }
  async function write(method, path, body) {
    const t = token ? token.value.trim() : "";
    if (!t) { say("enter the token first (Operator controls)"); return; }
    sessionStorage.setItem("gateway-token", t);
    const r = await fetch(path, {method: method, headers: {"Authorization": "Bearer " + t,
      "Content-Type": "application/json"}, body: body === undefined ? undefined : JSON.stringify(body)});
    const answer = await r.json().catch(function () { return {}; });
    say(r.status + ": " + (answer.error || answer.warning || JSON.stringify(answer)));
  }
  document.addEventListener("click", function (ev) {
    const b = ev.target.closest("button[data-action]");
    if (!b) { return; }
    const id = b.dataset.id, act = b.dataset.action;
    if (act === "pause" || act === "resume") { write("POST", "/api/evses/" + encodeURIComponent(id) + "/" + act); }
    if (act === "opt") { write("POST", "/api/events/" + encodeURIComponent(id) + "/opt", {opt: b.dataset.opt,
      reason: "from the status page"}); }
    if (act === "cap") {
      const kw = parseFloat(document.getElementById("cap-kw").value);
      const min = parseFloat(document.getElementById("cap-min").value);
      const body = {kw: kw}; if (!isNaN(min)) { body.minutes = min; }
      write("POST", "/api/cap", body);
    }
    if (act === "uncap") { write("DELETE", "/api/cap"); }
  });
})();
"""
