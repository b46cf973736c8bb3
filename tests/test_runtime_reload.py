"""SIGHUP is `systemctl reload`: the gateway reads its config again, applies what can change while it runs,
refuses the rest with one line, refuses a file that does not validate with one line, and keeps running.
`gateway run` in a subprocess gets the signals; `reload()` on a runtime shows what was applied."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest
from support.gateway_process import Gateway, get_json
from support.waiting import until

from gateway.config import load_config
from gateway.runtime.loop import Runtime
from gateway.runtime.reload import changed_paths, reload

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow

BASE = ["[site]", 'wiring = "three-phase-400/230"', "service_breaker_a = 63", "",
        "[[chargers]]", 'id = "cp-1"', 'protocol = "ocpp1.6"', 'phases = "L1-L2-L3"', "max_a = 32", "",
        "[ocpp]", "port = 0", "", "[status]", "port = 0", ""]


def write(path: Path, *, deadband: float = 0.5, level_2: float = 0.25, max_a: int = 32, store: str = "gw.sqlite",
          extra: str = "") -> None:
    text = "\n".join(BASE).replace("max_a = 32", f"max_a = {max_a}")
    text += "\n".join(["[control]", "tick_s = 0.25", f"deadband_a = {deadband}", "",
                       "[openadr]", f"simple_levels = {{ 1 = 0.5, 2 = {level_2}, 3 = 0.0 }}", "",
                       "[store]", f'path = "{path.parent / store}"', "", extra])
    path.write_text(text)


def test_reload_applies_the_live_keys_and_leaves_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    write(config)
    runtime = Runtime(load_config(config), serve_status=False)
    write(config, deadband=1.5, level_2=0.4, max_a=16, store="other.sqlite")
    applied, refused = reload(runtime, config)
    assert applied == ["control.deadband_a", "openadr.simple_levels.2"]
    assert refused == ["chargers[0].max_a", "store.path"]
    assert runtime.config.control.deadband_a == 1.5 and runtime.site.smoothing.deadband_a == 1.5
    assert runtime.schedule_settings.simple_levels[2] == 0.4
    assert runtime.config.chargers[0].max_a == 32 and runtime.config.store.path.endswith("gw.sqlite")
    assert changed_paths(runtime.config, load_config(config)) == refused


async def test_sighup_reloads_refuses_one_line_at_a_time_and_keeps_running(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    write(config)
    gateway = Gateway(config)
    try:
        url = await gateway.status_url()
        gateway.proc.send_signal(signal.SIGHUP)
        await gateway.line_with("reload: ")
        assert "unchanged" in gateway.text()

        write(config, deadband=2.0, max_a=16)
        gateway.proc.send_signal(signal.SIGHUP)
        applied = await gateway.line_with("reload applied: ")
        assert "control.deadband_a" in applied
        refused = await gateway.line_with("not applied, a restart is needed for: ")
        assert "chargers[0].max_a" in refused and "control" not in refused

        config.write_text(config.read_text() + "\n[control\n")  # a broken file
        gateway.proc.send_signal(signal.SIGHUP)
        line = await gateway.line_with("reload refused: ")
        assert "not valid TOML" in line and "still running" in line

        await asyncio.sleep(0.5)
        assert gateway.proc.poll() is None, "SIGHUP must not stop the gateway"
        status = await get_json(url + "api/status")
        assert status["loop"]["decisions"] > 0
        await until(lambda: True, 0.1)
        text = await gateway.terminate()  # and it still stops cleanly, releasing the chargers
    finally:
        gateway.close()
    assert "Traceback" not in text
    assert "shutdown: store closed" in text
    assert text.count("reload refused") == 1 and text.count("reload applied") == 1
