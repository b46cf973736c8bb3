"""The operator's writes: a temporary site power cap, paused chargers and charge modes set by hand, in force at
once, kept in the store.

Every change is in force in memory the moment it is made (a full disk must not refuse a cap) and handed
to the store's writer at once, so a restart right after it keeps it; `stored()` says whether the last
change reached the store, for the write's answer. A cap past its expiry is lifted, and logged, by the
first `cap(now)` after it. `now` is always the caller's.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from datetime import datetime

from gateway.store.health import WriteHealth
from gateway.store.operator import OperatorState, OperatorStore
from gateway.store.writer import StoreWriter
from gateway.waking import within

log = logging.getLogger("gateway.runtime")
STORE_WAIT_S = 2.0  # how long an operator's write waits to say whether it is stored


class OperatorControls:
    def __init__(self, chargers: frozenset[str], changed: Callable[[str], None],
                 clock: Callable[[], datetime]) -> None:
        self.chargers = chargers
        self.changed = changed  # asks for a decision, saying why
        self.clock = clock
        self.cap_kw: float | None = None
        self.cap_until: datetime | None = None  # the cap lapses then (None: until lifted)
        self.paused: set[str] = set()  # chargers paused: 0 A until resumed
        self.modes: dict[str, tuple[str, bool]] = {}  # charge modes set by hand: (mode, this session only)
        self._store: OperatorStore | None = None
        self._writer: StoreWriter | None = None
        self._health: WriteHealth | None = None
        self._saved: asyncio.Future[str | None] | None = None

    def attach(self, store: OperatorStore, writer: StoreWriter, health: WriteHealth) -> None:
        """Where changes are kept from now on."""
        self._store, self._writer, self._health = store, writer, health

    def restore(self, state: OperatorState) -> None:
        """What the store kept from before a restart."""
        self.cap_kw, self.cap_until = state.cap_kw, state.cap_until
        self.paused = set(state.paused)
        self.modes = dict(state.modes)
        if state.cap_kw is not None or state.paused or state.modes:
            until = state.cap_until.isoformat() if state.cap_until else "lifted"
            modes = ",".join(f"{cid}={mode}{' (session)' if session else ''}"
                             for cid, (mode, session) in sorted(state.modes.items()))
            log.info("operator state restored cap_kw=%s until=%s paused=%s modes=%s", state.cap_kw, until,
                     ",".join(sorted(state.paused)) or "none", modes or "none")

    def set_cap(self, kw: float | None, until: datetime | None = None) -> None:
        """A site power cap (None: lift it), in force until `until` (None: until lifted)."""
        self.cap_kw = kw
        self.cap_until = until if kw is not None else None
        self._save()
        self.changed(f"operator cap {kw}")

    def cap(self, now: datetime) -> float | None:
        """The cap in force at `now`; one past its expiry is lifted (and logged) here."""
        until = self.cap_until
        if self.cap_kw is not None and until is not None and now >= until:
            log.info("operator cap expired kw=%g until=%s", self.cap_kw, until.isoformat())
            self.cap_kw, self.cap_until = None, None
        return self.cap_kw

    def set_paused(self, charger_id: str, paused: bool) -> bool:
        """Pause (0 A, "paused by operator") or resume one charger; False when there is no such charger."""
        if charger_id not in self.chargers:
            return False
        if paused:
            self.paused.add(charger_id)
        else:
            self.paused.discard(charger_id)
        self._save()
        self.changed(f"charger={charger_id} {'paused' if paused else 'resumed'} by operator")
        return True

    def set_modes(self, modes: dict[str, tuple[str, bool]]) -> None:
        """The charge modes set by hand now in force (the solar watch's word: it applies them), kept."""
        if modes != self.modes:
            self.modes = dict(modes)
            self._save()

    def _save(self) -> None:
        store, writer = self._store, self._writer
        if store is None or writer is None:
            return

        async def save() -> None:
            # What is in force when the write runs: a later change replaces a write still waiting.
            state = OperatorState(self.cap_kw, self.cap_until, frozenset(self.paused), dict(self.modes))
            await asyncio.to_thread(store.save, state, self.clock())

        self._saved = writer.submit("operator", save)

    async def stored(self, timeout_s: float = STORE_WAIT_S) -> str | None:
        """None when the last change is stored, else one line saying why not (it is in force all the same,
        kept in memory and retried)."""
        saved = self._saved
        if saved is None:
            return None
        try:
            return await within(asyncio.shield(saved), timeout_s)
        except TimeoutError:
            trouble = self._health.trouble() if self._health is not None else None
            return trouble.error if trouble is not None else f"the store did not answer within {timeout_s:g}s"
