"""`gateway run` as a subprocess for the tests that run the real program, and reading its store and its
status page from outside, as an operator would."""

from __future__ import annotations

import asyncio
import json
import signal
import sqlite3
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path
from typing import Any

from support.waiting import until


class Gateway:
    """`gateway run --config FILE` as a subprocess, its stderr drained all along (a full pipe would block
    its logging and so its event loop)."""

    def __init__(self, config: Path) -> None:
        # faulthandler: a gateway that does not stop is made to print where its threads are (SIGABRT).
        self.proc = subprocess.Popen(
            [sys.executable, "-X", "faulthandler", "-m", "gateway", "run", "--config", str(config)],
            stderr=subprocess.PIPE, text=True, cwd=config.parent)
        self.lines: list[str] = []
        assert self.proc.stderr is not None
        stream = self.proc.stderr
        self._reader = threading.Thread(target=lambda: self.lines.extend(iter(stream.readline, "")), daemon=True)
        self._reader.start()

    def text(self) -> str:
        return "".join(list(self.lines))

    async def line_with(self, needle: str, timeout_s: float = 15.0) -> str:
        await until(lambda: any(needle in line for line in list(self.lines)) or self.proc.poll() is not None,
                    timeout_s, f"no {needle!r} from the gateway")
        found = [line for line in list(self.lines) if needle in line]
        assert found, f"gateway exited {self.proc.returncode} before {needle!r}:\n{self.text()}"
        return found[0]

    async def status_url(self) -> str:
        return (await self.line_with("status at ")).rsplit(" ", 1)[1].strip()

    def kill(self) -> None:
        self.proc.kill()  # SIGKILL: no handler, no flush, no clean close
        self.proc.wait(timeout=10)

    async def terminate(self) -> str:
        self.proc.send_signal(signal.SIGTERM)
        try:
            await until(lambda: self.proc.poll() is not None, 15.0, "gateway did not stop on SIGTERM")
        except AssertionError:
            self.proc.send_signal(signal.SIGABRT)
            await until(lambda: self.proc.poll() is not None, 5.0)
            self._reader.join(timeout=5)
            raise AssertionError(f"gateway did not stop on SIGTERM:\n{self.text()[-6000:]}") from None
        self._reader.join(timeout=5)
        assert self.proc.returncode == 0, self.text()
        return self.text()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()



async def get_json(url: str) -> Any:
    def fetch() -> Any:
        with urllib.request.urlopen(url, timeout=5) as response:
            return json.load(response)

    return await asyncio.to_thread(fetch)


def stored(path: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[Any, ...]]:
    """Read the gateway's store beside it (WAL lets a reader in while it writes)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10.0)
    try:
        return conn.execute(sql, params).fetchall()
    except sqlite3.OperationalError:  # not created yet
        return []
    finally:
        conn.close()
