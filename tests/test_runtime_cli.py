"""`gateway run`: a bad config is one line per problem and exit 2; a good one runs until SIGTERM, exit 0."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

from gateway.cli import main

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow


def test_a_bad_config_is_one_line_per_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = -5\n\n'
                   '[[chargers]]\nid = "a"\nprotocol = "ocpp9"\nphases = "L1"\nmax_a = 16\n')
    assert main(["run", "--config", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) >= 2 and all(line.startswith("error: ") for line in err)
    assert any("service_breaker_a" in line for line in err) and any("chargers[0].protocol" in line for line in err)
    assert main(["run", "--config", str(tmp_path / "missing.toml")]) == 2


def test_run_serves_status_and_stops_cleanly_on_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text('[site]\nwiring = "three-phase-400/230"\nservice_breaker_a = 63\n\n'
                      f'[status]\nport = 0\n\n[ocpp]\nport = 0\n\n[control]\ntick_s = 0.2\ncharger_stale_s = 5\n\n'
                      f'[store]\npath = "{tmp_path / "store.sqlite"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "run", "--config", str(config)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    try:
        assert proc.stderr is not None
        url = None
        deadline = time.monotonic() + 15
        while url is None and time.monotonic() < deadline:
            line = proc.stderr.readline()
            if "status at " in line:
                url = line.rsplit(" ", 1)[1].strip()
        assert url is not None, "no status URL printed"
        time.sleep(0.5)  # a couple of ticks
        with urllib.request.urlopen(url + "healthz", timeout=5) as response:
            assert response.status == 200
        with urllib.request.urlopen(url + "api/status", timeout=5) as response:
            assert json.load(response)["vtn"]["configured"] is False
        proc.send_signal(signal.SIGTERM)
        rest = proc.communicate(timeout=15)[1]
        assert proc.returncode == 0
        assert "store closed" in rest and "Traceback" not in rest
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_demo_prints_where_to_look_and_stops_on_ctrl_c(tmp_path: Path) -> None:
    proc = subprocess.Popen([sys.executable, "-m", "gateway", "demo", "--port", "0", "--speed", "20"],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    seen: list[str] = []
    # Drained all along: a full pipe would block the gateway's logging and so its event loop.
    reader = threading.Thread(target=lambda: seen.extend(iter(proc.stderr.readline, "")) if proc.stderr else None,
                              daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not any("Ctrl-C to stop" in line for line in list(seen)):
            time.sleep(0.1)
        url = next(line.split()[-1] for line in list(seen) if line.startswith("demo: status page"))
        deadline = time.monotonic() + 15
        curtailed = False
        while time.monotonic() < deadline and not curtailed:  # the curtailment starts 2 s after registration
            time.sleep(0.5)
            with urllib.request.urlopen(url + "api/status", timeout=5) as response:
                curtailed = json.load(response)["site"]["ev_limit_kw"] is not None
        assert curtailed
        proc.send_signal(signal.SIGINT)
        assert proc.wait(timeout=20) == 0
        reader.join(timeout=5)
        text = "".join(seen)
        assert "store closed" in text and "Traceback" not in text
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
