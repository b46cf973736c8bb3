"""Log lines for people and machines: key=value by default, one JSON object per line on request.

The gateway's own messages are already written as key=value pairs (`limit charger=cp-1 old_a=16 …`);
this adds when, how bad and which part of the gateway, in the same style. With `as_json` each line is one
JSON object whose fields are the message's own: `limit charger=cp-1 old_a=14 new_a=8 reason='ev (…)'`
becomes `{"event": "limit", "charger": "cp-1", "old_a": 14, "new_a": 8, "reason": "ev (…)", …}` beside
`at`, `level`, `logger` and the whole `message`; fields passed with `extra=` are added too. In that mode
Python's warnings and an uncaught exception are logged as well, so every line on stderr is JSON. Chatty
libraries (openleadr logs every poll) are held to warnings so one decision stays one line. `RecentLog`
keeps the last lines in memory, numbered, for the status endpoint's `/api/log`.
"""

from __future__ import annotations

import ast
import json
import logging
import re
import sys
import warnings
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


# key=value, the value bare or quoted as Python's repr quotes it (`reason='ev (demo:SIMPLE:level=2)'`).
FIELD = re.compile(r"""(?:^|(?<=\s))([a-z_][a-z0-9_]*)=('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|[^\s]*)""")
RESERVED = frozenset({"at", "level", "logger", "message", "event", "exception"})
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "taskName"}


def _value(text: str) -> object:
    if text[:1] in ("'", '"'):
        try:
            return ast.literal_eval(text)
        except (ValueError, SyntaxError):
            return text[1:-1]
    if text in ("True", "False", "None"):
        return {"True": True, "False": False, "None": None}[text]
    for kind in (int, float):
        try:
            number = kind(text)
        except ValueError:
            continue
        if isinstance(number, float) and number != number:  # NaN is not JSON
            return text
        return number
    return text


def fields_of(message: str) -> dict[str, object]:
    """The event (the words before the first key=value) and the key=value pairs of a log message."""
    found = list(FIELD.finditer(message))
    if not found:
        return {"event": message}
    out: dict[str, object] = {"event": message[:found[0].start()].strip() or None}
    for match in found:
        key = match.group(1)
        out[key if key not in RESERVED else f"{key}_"] = _value(match.group(2))
    return out


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        entry: dict[str, object] = {
            "at": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
        }
        entry.update(fields_of(message))
        for key, value in vars(record).items():
            if key not in _STANDARD and not key.startswith("_"):
                entry[key if key not in RESERVED else f"{key}_"] = value
        entry["message"] = message
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


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
    if as_json:
        # Nothing may reach stderr unformatted: warnings and an uncaught exception become log lines too.
        logging.captureWarnings(True)
        warnings.simplefilter("default")

        def hook(kind: type[BaseException], exc: BaseException, tb: object) -> None:
            logging.getLogger("gateway").critical("uncaught exception", exc_info=(kind, exc, tb))  # type: ignore[arg-type]

        sys.excepthook = hook



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
