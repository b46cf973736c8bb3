"""What the running gateway keeps in its store, written off the control path, and what it says when it cannot.

The `Recorder` opens the store (refusing a damaged file), and takes the session ledger's readings, one
telemetry sample a tick and the limits sent, each held in a bounded queue in memory and handed to one
writer task; nothing the control loop does ever waits for it. Once a tick, `watch` retries what the VTN
adapter holds in memory, prunes old rows hourly, checks the file daily and raises or clears the
`store.write` and `store.integrity` alarms (each logged once when it starts and once when it ends).
`close` gives the last writes a bounded time and says what could not be stored.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections import deque
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta
from pathlib import Path

from gateway.domain import ChargerReading
from gateway.runtime.alarms import Alarms
from gateway.store.db import StoreDamaged, check_file, integrity_problems
from gateway.store.decisions import DecisionStore, SentLimit
from gateway.store.health import PRECIOUS, StillHeld, WriteHealth
from gateway.store.operator import OperatorStore
from gateway.store.sessions import SessionLedger
from gateway.store.telemetry import Sample, Telemetry
from gateway.store.vtn import VenStore
from gateway.store.writer import StoreWriter, write_held

log = logging.getLogger("gateway.runtime")
PRUNE_EVERY = timedelta(hours=1)  # old rows of limits sent are deleted (and telemetry compacted) this often
READINGS_HELD = 10_000  # ledger readings held in memory while the store cannot be written (the oldest go)
TELEMETRY_HELD = 3600  # telemetry samples held likewise
LIMITS_HELD = 100_000  # limits-sent rows held likewise
INTEGRITY_EVERY = timedelta(days=1)  # the store's file is checked at start and this often
STORE_STUCK_S = 10.0  # a write under way this long raises the store.write alarm before it fails
STORE_CRITICAL_S = 60.0  # store.write turns critical (healthz 503) after this long, or at once for precious data
STORE_DRAIN_S = 5.0  # at shutdown, how long the last writes may take


class Recorder:
    def __init__(self, path: Path, telemetry_days: int, alarms: Alarms, clock: Callable[[], datetime]) -> None:
        self.path = path
        self.telemetry_days = telemetry_days  # a reload may change it
        self.alarms = alarms
        self.clock = clock
        self.health = WriteHealth()
        self.writer = StoreWriter(self.health)
        self.vtn: VenStore | None = None  # the VTN adapter's store
        self.decisions: DecisionStore | None = None
        self.ledger: SessionLedger | None = None  # charging sessions, from the readings (billing)
        self.telemetry: Telemetry | None = None
        self.operator: OperatorStore | None = None
        self.readings: deque[ChargerReading] = deque(maxlen=READINGS_HELD)  # not yet in the ledger
        self._samples: deque[Sample] = deque(maxlen=TELEMETRY_HELD)
        self._limits: deque[SentLimit] = deque(maxlen=LIMITS_HELD)
        self._writer_task: asyncio.Task[None] | None = None
        self._integrity_at: datetime | None = None
        self._pruned_at: datetime | None = None

    async def open(self) -> None:
        """Open the store; a damaged file is refused (`StoreDamaged`), not half-used."""
        problems = await asyncio.to_thread(check_file, self.path)
        if problems:
            raise StoreDamaged(self.path, problems)
        self._integrity_at = self.clock()
        self.vtn = VenStore.open(self.path, health=self.health)
        # A second connection: the VEN's transactions and ours must not interleave on one connection.
        self.decisions = DecisionStore.open(self.path)
        self._writer_task = asyncio.create_task(self.writer.run(), name="store-writer")
        # On the decision store's connection, written by the writer task one after another.
        self.ledger = SessionLedger(self.decisions.db, self.decisions.lock)
        self.telemetry = Telemetry(self.decisions.db, self.decisions.lock)
        self.operator = OperatorStore(self.decisions.db, self.decisions.lock)

    # ------------------------------------------------------------------------------------ what is kept

    def observe(self, reading: ChargerReading) -> None:
        """A charger reading for the session ledger (written with the next `record`)."""
        self.readings.append(reading)

    def record(self, sample: Sample | None = None) -> None:
        """The readings since the last call into the ledger, and a telemetry sample: handed to the writer
        (which writes all that waits in one transaction each), never waited for."""
        if self.ledger is not None and self.readings:
            self.writer.submit("ledger", self._write_ledger)
        if sample is not None and self.telemetry is not None:
            self._samples.append(sample)
            self.writer.submit("telemetry", self._write_telemetry)

    def limits_sent(self, rows: Iterable[SentLimit]) -> None:
        self._limits.extend(rows)
        self.writer.submit("limits", self._write_limits)

    async def _write_ledger(self) -> None:
        assert self.ledger is not None
        await write_held(self.readings, self.ledger.observe)

    async def _write_telemetry(self) -> None:
        assert self.telemetry is not None
        await write_held(self._samples, self.telemetry.write_many)

    async def _write_limits(self) -> None:
        assert self.decisions is not None
        await write_held(self._limits, self.decisions.record)

    async def _flush_vtn(self) -> None:
        assert self.vtn is not None
        if not await asyncio.to_thread(self.vtn.flush):
            raise StillHeld("the VTN adapter's writes are held in memory")

    async def _prune(self, now: datetime) -> None:
        assert self.decisions is not None
        keep = timedelta(days=self.telemetry_days)
        await asyncio.to_thread(self.decisions.prune, now - keep)
        if self.telemetry is not None:
            await asyncio.to_thread(self.telemetry.compact, now, keep)

    async def _check_integrity(self) -> None:
        db = self.decisions
        assert db is not None

        def check() -> list[str]:
            with db.lock:
                return integrity_problems(db.db.conn)

        self.health.checked(await asyncio.to_thread(check))

    # ------------------------------------------------------------------------------------ each tick

    def watch(self, now: datetime) -> None:
        """Each tick: prune hourly, retry what the VTN adapter holds, check the file daily, and say what is
        wrong (the store.write and store.integrity alarms, each logged once when it starts and once when it
        ends). Handed to the writer, never awaited: a locked store or a full disk must not stop the deciding."""
        if self.decisions is None:
            return
        if self._pruned_at is None or now - self._pruned_at > PRUNE_EVERY:
            self._pruned_at = now
            self.writer.submit("prune", functools.partial(self._prune, now))
        trouble = self.health.trouble()
        if self.vtn is not None and (self.vtn.holding() or trouble is not None):
            self.writer.submit("vtn", self._flush_vtn)
        if self._integrity_at is None or now - self._integrity_at >= INTEGRITY_EVERY:
            self._integrity_at = now
            self.writer.submit("integrity", self._check_integrity)
        path = self.path
        stuck_s = self.writer.stuck_for()
        if trouble is None and stuck_s < STORE_STUCK_S:
            self.alarms.clear("store.write", now, f"waiting={len(self.writer.pending())}")
        else:
            error = trouble.error if trouble is not None else f"a write has taken {stuck_s:.0f}s"
            held = ", ".join(sorted({*(trouble.whats if trouble is not None else ()), *self.writer.pending()}))
            for_s = max(trouble.for_s if trouble is not None else 0.0, stuck_s)
            waiting_precious = bool(PRECIOUS & set(self.writer.pending()))  # an operator's change, say
            critical = trouble is not None and (trouble.precious or waiting_precious or for_s >= STORE_CRITICAL_S)
            self.alarms.raise_(
                "store.write",
                f"the store cannot be written ({error}); the site is still decided and held under its limits; "
                f"held in memory and retried: {held}",
                now, severity="critical" if critical else "warning",
                action=f"free space on the disk of {path}, or stop what holds it locked (fuser {path}); "
                       "a restart now would lose what is held (docs/operations.md)")
        damage = self.health.damage() or ([trouble.error] if trouble is not None and trouble.damaged else [])
        if damage:
            self.alarms.raise_(
                "store.integrity", f"the store {path} is damaged ({damage[0]}); the gateway runs on what it "
                "holds in memory", now, severity="critical",
                action=f"stop the gateway, then `gateway store set-aside --db {path}` or `gateway store restore "
                       f"--db {path} BACKUP` (docs/store.md)")
        else:
            self.alarms.clear("store.integrity", now)

    def moved(self, step: Callable[[datetime], datetime]) -> None:
        """The wall clock stepped: the recorder's own stamps move with it."""
        if self._integrity_at is not None:
            self._integrity_at = step(self._integrity_at)
        if self._pruned_at is not None:
            self._pruned_at = step(self._pruned_at)

    # ------------------------------------------------------------------------------------ the end

    async def close(self) -> None:
        """The last writes within a bounded time (a locked store must not hold the shutdown for ever)."""
        if self.decisions is not None:
            self.record()  # what the chargers said last goes into the ledger
            if self.vtn is not None and self.vtn.holding():
                self.writer.submit("vtn", self._flush_vtn)
            task = self._writer_task
            if task is not None and not await self.writer.finish(task, timeout_s=STORE_DRAIN_S):
                trouble = self.health.trouble()
                log.error("shutdown: not stored: %s (%s)", ", ".join(self.writer.unwritten),
                          trouble.error if trouble is not None else "the store did not answer in time")
            self.decisions.close()
        if self.vtn is not None:
            self.vtn.close()
            log.info("shutdown: store closed")
