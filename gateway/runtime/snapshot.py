"""The running gateway seen from outside: the JSON document behind `/api/status` (and the page and metrics).

Kept as the runtime's entry point (`Runtime.status()` calls `status_of`); the document itself, typed and
with every component's health, is built by `gateway.runtime.status_view`.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gateway.runtime.loop import Runtime


def status_of(rt: Runtime, now: datetime) -> dict[str, Any]:
    from gateway.runtime.status_view import build

    return build(rt, now)
