"""`gateway demo --log-json` as a process: every line on stderr is one JSON object (the demo's own lines, the
gateway's, warnings), with the message's fields as JSON fields; the demo prints its operator token and the
token works for a write; a SIGINT stops it with exit 0."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_demo_with_log_json_writes_only_json_and_prints_a_working_token(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", "0", "--speed", "20", "--tick", "0.5",
                             "--log-json", "--timezone", "Europe/Berlin"],
                            cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    url = token = None
    try:
        assert proc.stderr is not None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and (url is None or token is None):
            line = proc.stderr.readline()
            if not line:
                break
            lines.append(line)
            entry = json.loads(line)
            if entry.get("logger") == "gateway.demo":
                found = re.search(r"(http://127\.0\.0\.1:\d+/)", entry["message"])
                url = found.group(1) if found else url
                if entry["message"].startswith("token"):
                    token = entry["message"].split()[1]
        assert url is not None and token is not None, lines[-5:]
        time.sleep(3)  # decisions, limits, the curtailment's first lines
        request = urllib.request.Request(url + "api/cap", data=b'{"kw": 40, "minutes": 5}', method="POST",
                                         headers={"Authorization": f"Bearer {token}",
                                                  "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=10) as response:
            assert response.status in (200, 202)
        time.sleep(1)
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    lines += err.splitlines(keepends=True)
    assert proc.returncode == 0, err[-2000:]
    entries = [json.loads(line) for line in lines if line.strip()]  # every line is JSON, or this raises
    assert all({"at", "level", "logger", "message", "event"} <= set(e) for e in entries)
    limits = [e for e in entries if e["logger"] == "gateway.runtime" and e["event"] == "limit"]
    assert limits and all(isinstance(e["new_a"], int | float) and e["charger"] for e in limits)
    assert any(e["event"] == "operator write=cap" or e.get("kw") == 40 for e in entries)
    assert any(e["event"].startswith("site limit") and e.get("cause") for e in entries)
