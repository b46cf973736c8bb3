"""Whether the store's writes work: what failed, since when and why, and what is held in memory meanwhile.

Both connections report here (the control loop's writer and the VTN adapter's store); the runtime reads
`trouble()` every tick and turns it into the `store.write` and `store.integrity` alarms. Nothing here logs
or waits: a fault is logged once, by the alarm, when it starts and once when it ends. Thread-safe (the
writes run in worker threads). `what` names the part that failed ("telemetry", "ledger", "events" …).
"""

from __future__ import annotations

import sqlite3
import threading
import time
from dataclasses import dataclass

# Writes whose loss an operator or the utility would notice: while one of these is held only in memory
# the alarm is critical (healthz 503), not a warning.
PRECIOUS = frozenset({"events", "opts", "operator", "registration"})


def is_store_fault(exc: BaseException) -> bool:
    """A fault of the file, the disk or another process (retry later), not of the code (a bug)."""
    if isinstance(exc, sqlite3.IntegrityError | sqlite3.ProgrammingError | sqlite3.InterfaceError):
        return False
    return isinstance(exc, sqlite3.Error | OSError)


def is_damage(exc: BaseException) -> bool:
    """The file itself is damaged (retrying cannot help; docs/store.md says what to do)."""
    text = str(exc).lower()
    return isinstance(exc, sqlite3.DatabaseError) and ("malformed" in text or "not a database" in text)


def describe(exc: BaseException) -> str:
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:200]


@dataclass(frozen=True, slots=True)
class Trouble:
    whats: tuple[str, ...]  # the parts that cannot write, sorted
    error: str  # the latest error, one line
    for_s: float  # how long the oldest failure has lasted
    precious: bool  # an event, opt, operator change or the registration is held only in memory
    damaged: bool  # the error says the file is damaged


class WriteHealth:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._failing: dict[str, float] = {}  # what → monotonic time of its first failure
        self._error = ""
        self._damaged: list[str] = []  # what the last integrity check found (empty: fine)

    def failed(self, what: str, exc: BaseException) -> None:
        with self._lock:
            self._failing.setdefault(what, time.monotonic())
            self._error = describe(exc)

    def ok(self, what: str) -> None:
        with self._lock:
            self._failing.pop(what, None)

    def failing(self, what: str) -> bool:
        with self._lock:
            return what in self._failing

    def trouble(self) -> Trouble | None:
        with self._lock:
            if not self._failing:
                return None
            whats = tuple(sorted(self._failing))
            for_s = time.monotonic() - min(self._failing.values())
            error = self._error
        damaged = "malformed" in error.lower() or "not a database" in error.lower()
        return Trouble(whats, error, for_s, bool(PRECIOUS & set(whats)), damaged)

    def checked(self, problems: list[str]) -> None:
        """The result of an integrity check (an empty list: the file is sound)."""
        with self._lock:
            self._damaged = list(problems)

    def damage(self) -> list[str]:
        with self._lock:
            return list(self._damaged)


class StillHeld(OSError):
    """Raised by a write job whose data stays held in memory (the writer backs off and tries it again)."""
