"""Log lines for people and machines: key=value by default, one JSON object per line on request.

The gateway's own messages are already written as key=value pairs (`limit charger=cp-1 old_a=16 …`);
this adds when, how bad and which part of the gateway, in the same style. Chatty libraries (openleadr
logs every poll) are held to warnings so one decision stays one line. `RecentLog` keeps the last lines in
memory, numbered, for the status endpoint's `/api/log`.
"""

from __future__ import annotations

import json
import logging
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime

QUIET_LIBRARIES = ("openleadr", "websockets", "pymodbus", "aiohttp.access", "ocpp", "apscheduler")


class KeyValueFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        at = datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds")
        line = f"at={at} level={record.levelname.lower()} logger={record.name} {record.getMessage()}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


class QuietLibraries(logging.Filter):
    """A filter on the handler, not logger levels: some libraries reset their own level when imported."""

    def __init__(self, floor: int) -> None:
        super().__init__()
        self.floor = floor

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno >= self.floor:
            return True
        return not any(record.name == n or record.name.startswith(n + ".") for n in QUIET_LIBRARIES)


def setup_logging(*, as_json: bool = False, level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter() if as_json else KeyValueFormatter())
    handler.addFilter(QuietLibraries(max(level, logging.WARNING)))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)



@dataclass(frozen=True, slots=True)
class LogEntry:
    seq: int
    at: datetime
    level: str
    logger: str
    message: str

    def as_json(self) -> dict[str, object]:
        return {"seq": self.seq, "at": self.at.isoformat(timespec="milliseconds"), "level": self.level,
                "logger": self.logger, "message": self.message}


class RecentLog(logging.Handler):
    """The last `size` log lines in memory, numbered, for the status endpoint's `/api/log?since=`.

    Each entry gets a sequence number that only grows, so a client polls with the last one it saw and
    misses nothing the ring still holds; older lines are dropped, never the newest.
    """

    def __init__(self, size: int = 1000, level: int = logging.INFO) -> None:
        super().__init__(level)
        self._entries: deque[LogEntry] = deque(maxlen=size)
        self._seq = 0

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # a bad format string in someone's log call must not break logging
            self.handleError(record)
            return
        self._seq += 1
        at = datetime.fromtimestamp(record.created, UTC)
        self._entries.append(LogEntry(self._seq, at, record.levelname.lower(), record.name, message))

    def since(self, seq: int = 0, at: datetime | None = None) -> list[LogEntry]:
        """Entries numbered above `seq` and, when `at` is given, logged at or after it."""
        return [e for e in list(self._entries) if e.seq > seq and (at is None or e.at >= at)]

    @property
    def last_seq(self) -> int:
        return self._seq
