"""Log lines for people and machines: key=value by default, one JSON object per line on request.

The gateway's own messages are already written as key=value pairs (`limit charger=cp-1 old_a=16 …`);
this adds when, how bad and which part of the gateway, in the same style. Chatty libraries (openleadr
logs every poll) are held to warnings so one decision stays one line.
"""

from __future__ import annotations

import json
import logging
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
