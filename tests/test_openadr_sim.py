"""The simulator VTN as a user runs it (`python -m gateway.sim.vtn`), over mutual TLS with certificates
from `gateway certs init`, and the VEN registering with it and receiving its demo events."""

from __future__ import annotations

import asyncio
import contextlib
import io
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gateway.cli import main
from gateway.config.openadr import OpenAdrSection, VtnSection
from gateway.openadr.ven import Ven
from gateway.store.vtn import VenStore

# Subprocesses and real peers end to end: `pytest -m "not slow"` leaves these out.
pytestmark = pytest.mark.slow


def test_tls_options_go_together() -> None:
    done = subprocess.run([sys.executable, "-m", "gateway.sim.vtn", "--cert", "vtn.crt"], capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2 and "go together" in done.stderr and "Traceback" not in done.stderr


async def test_sim_vtn_over_mtls_from_the_command_line(tmp_path: Path) -> None:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["certs", "init", str(tmp_path / "pki"), "--ven-name", "depot-1"]) == 0
    prints = dict(re.findall(r"(VTN|VEN) fingerprint: (\S+)", out.getvalue()))
    pki = tmp_path / "pki"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "gateway.sim.vtn", "--port", "0", "--poll-s", "1", "--demo-events",
        "--cert", str(pki / "vtn.crt"), "--key", str(pki / "vtn.key"), "--ca-file", str(pki / "ca.crt"),
        "--ven", f"depot-1={prints['VEN']}", stderr=asyncio.subprocess.PIPE,
    )
    store = VenStore.open(tmp_path / "gw.sqlite")
    task: asyncio.Task[None] | None = None
    try:
        assert proc.stderr is not None
        line = ""
        while "listening on " not in line:  # library warnings (signxml on cryptography 51: DSA) may come first
            line = (await asyncio.wait_for(proc.stderr.readline(), 30)).decode()
            assert line, "the simulator exited before it listened"
        url = line.split("listening on ")[1].strip()
        assert url.startswith("https://127.0.0.1:")
        # The [vtn] block `certs init` printed, with the url filled in.
        config = VtnSection(url=url, ven_name="depot-1", cert=str(pki / "ven.crt"), key=str(pki / "ven.key"),
                            ca_file=str(pki / "ca.crt"), vtn_fingerprint=prints["VTN"], poll_s=0.2,
                            backoff_initial_s=0.05, backoff_max_s=0.2)
        ven = Ven(config, OpenAdrSection(ev_capacity_kw=50.0), store, rng=random.Random(1))
        task = asyncio.create_task(ven.run())
        await asyncio.wait_for(ven.registered.wait(), 15)
        for _ in range(400):  # the demo events come a second after registration
            if len(store.events()) == 2:
                break
            await asyncio.sleep(0.05)
        names = sorted(e.signals[0].name.value for e in store.events().values())
        assert names == ["ELECTRICITY_PRICE", "SIMPLE"]
    finally:
        if task is not None:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        store.close()
        proc.terminate()
        await proc.wait()
