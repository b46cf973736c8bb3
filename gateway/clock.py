"""The wall clock, read in one place: the moment now, in UTC. The pure core never calls it (`now` is
always its parameter); the edges take it as their default clock and tests inject their own."""

from __future__ import annotations

from datetime import UTC, datetime


def utc_now() -> datetime:
    return datetime.now(UTC)
