"""Guards in front of openleadr's XML parsing: size, DTDs and entities, then durations and date-times.

Found by test (openleadr 0.5.36 on lxml 6): openleadr's schema-bound lxml parser *crashes the process*
(SIGSEGV) on any document whose body uses an entity, even an internal one; external entities are not
loaded. So every body first goes through expat, which is told to refuse any DOCTYPE or ENTITY declaration
before anything is expanded, and a byte limit applies before that. After schema validation the
icalendar durations and date-times are checked strictly and rewritten in the one form openleadr's
regexes read correctly (it reads `P1W` and `PT1.5S` as zero and leaves `+01:00` offsets as strings).
"""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from xml.parsers import expat

from lxml import etree

XCAL = "urn:ietf:params:xml:ns:icalendar-2.0"
EI = "http://docs.oasis-open.org/ns/energyinterop/201110"
MAX_DEPTH = 64
MAX_DURATION = timedelta(days=3660)

_DURATION = re.compile(
    r"^(?P<sign>[+-])?P(?:(?P<w>\d+)W|(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?)$"
)


class RefusedPayload(Exception):
    """A VTN body we will not act on; the message is one line saying why."""


def check_raw(body: bytes, max_bytes: int) -> None:
    """Refuse oversized, non-well-formed, DTD-carrying or absurdly deep bodies before any real parser sees them."""
    if len(body) > max_bytes:
        raise RefusedPayload(f"body of {len(body)} bytes is over the {max_bytes}-byte limit")
    parser = expat.ParserCreate(namespace_separator=" ")
    depth = 0

    def doctype(*_: object) -> None:
        raise RefusedPayload("body declares a DOCTYPE (DTDs and entities are never valid in OpenADR)")

    def entity(*_: object) -> None:
        raise RefusedPayload("body declares an ENTITY")

    def start(*_: object) -> None:
        nonlocal depth
        depth += 1
        if depth > MAX_DEPTH:
            raise RefusedPayload(f"body nests deeper than {MAX_DEPTH} elements")

    def end(*_: object) -> None:
        nonlocal depth
        depth -= 1

    parser.StartDoctypeDeclHandler = doctype
    parser.EntityDeclHandler = entity
    parser.UnparsedEntityDeclHandler = entity
    parser.StartElementHandler = start
    parser.EndElementHandler = end
    try:
        parser.Parse(body, True)
    except expat.ExpatError as exc:
        raise RefusedPayload(f"malformed XML: {expat.errors.messages[exc.code]} at line {exc.lineno}") from None


def parse_duration(text: str) -> timedelta:
    """RFC 5545 dur-value (what xCal carries): weeks, or days and/or H/M/S, whole numbers, no sign but +."""
    text = text.strip()
    if text == "P":  # openleadr (and so many VTNs) writes a zero duration as a bare "P"
        return timedelta(0)
    m = _DURATION.match(text)
    if m is None or text == "PT" or text.endswith("T"):
        raise RefusedPayload(f"duration {text!r} is not an RFC 5545 duration (whole W, D, H, M, S only)")
    if m.group("sign") == "-":
        raise RefusedPayload(f"duration {text!r} is negative")
    parts = {k: int(v) for k, v in m.groupdict().items() if k != "sign" and v is not None}
    try:
        value = timedelta(
            weeks=parts.get("w", 0),
            days=parts.get("d", 0),
            hours=parts.get("h", 0),
            minutes=parts.get("m", 0),
            seconds=parts.get("s", 0),
        )
    except OverflowError:
        raise RefusedPayload(f"duration {text!r} is out of range") from None
    if value > MAX_DURATION:
        raise RefusedPayload(f"duration {text!r} is longer than ten years")
    return value


def parse_date_time(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text.strip())
    except ValueError:
        raise RefusedPayload(f"date-time {text!r} is not ISO 8601") from None
    if value.tzinfo is None:
        raise RefusedPayload(f"date-time {text!r} has no UTC designator or offset")
    return value.astimezone(UTC)


def canonical_duration(value: timedelta) -> str:
    return f"PT{int(value.total_seconds())}S"


def canonical_date_time(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def normalize_tree(root: etree._Element) -> None:
    """Check every duration and date-time in place and rewrite it in the canonical form; mark test events."""
    for tag in (f"{{{XCAL}}}duration", f"{{{XCAL}}}startafter"):
        for el in root.iter(tag):
            if len(el) == 0:  # <xcal:duration> wraps a <xcal:duration> leaf
                el.text = canonical_duration(parse_duration(el.text or ""))
    for el in root.iter(f"{{{XCAL}}}date-time"):
        el.text = canonical_date_time(parse_date_time(el.text or ""))
    for el in root.iter(f"{{{EI}}}testEvent"):
        # 2.0b: any value other than "false" marks a test event; openleadr only understands "true".
        el.text = "false" if (el.text or "").strip() == "false" else "true"
