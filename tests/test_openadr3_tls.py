"""The OpenADR 3 VEN over TLS: it trusts the VTN (and its token endpoint) only through the configured CA; a
VTN whose certificate another CA signed is not talked to (one line, nothing stored, retried with backoff)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from support.waiting import until

from gateway.certs import DevPki, init_dev_pki
from gateway.openadr3.settings import Oadr3Settings
from gateway.openadr3.ven import Oadr3Ven
from gateway.sim.vtn3 import SimVtn3
from gateway.store.vtn3 import Oadr3Store


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> DevPki:
    return init_dev_pki(tmp_path_factory.mktemp("pki"), ven_name="site-1")


@pytest.fixture
async def vtn(pki: DevPki) -> AsyncIterator[SimVtn3]:
    sim = SimVtn3(cert=str(pki.vtn_cert), key=str(pki.vtn_key), notify=False)
    await sim.start()
    yield sim
    await sim.stop()


def settings(vtn: SimVtn3, ca_file: Path) -> Oadr3Settings:
    return Oadr3Settings(url=vtn.url, version="3.1.0", ven_name="site-1", client_id="ven-client",
                         client_secret="ven-secret", ca_file=str(ca_file), poll_s=0.1, backoff_initial_s=0.05,
                         backoff_max_s=0.2, request_timeout_s=2.0, subscribe=False, charger_ids=("cp-1",),
                         resources={"cp-1": ("cp-1",)})


async def test_enrols_over_tls_with_the_configured_ca(tmp_path: Path, vtn: SimVtn3, pki: DevPki) -> None:
    assert vtn.url.startswith("https://")
    ven = Oadr3Ven(settings(vtn, pki.ca_cert), Oadr3Store.open(tmp_path / "gw.sqlite"))
    task = asyncio.create_task(ven.run())
    try:
        await asyncio.wait_for(ven.enrolled.wait(), 10)
        assert [r["resourceName"] for r in vtn.objects["resources"].values()] == ["cp-1"]
        assert vtn.schema_errors == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_a_vtn_signed_by_another_ca_is_refused(tmp_path: Path, vtn: SimVtn3,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    other = init_dev_pki(tmp_path / "other", ven_name="site-1")
    ven = Oadr3Ven(settings(vtn, other.ca_cert), Oadr3Store.open(tmp_path / "gw.sqlite"))
    caplog.set_level(logging.DEBUG, logger="gateway.openadr3")
    task = asyncio.create_task(ven.run())
    try:
        await until(lambda: ven.failures >= 3, 10, "no failed attempts")
        assert not ven.enrolled.is_set() and vtn.tokens_issued == 0 and not vtn.objects["vens"]
        warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING
                    and "unreachable" in r.getMessage()]
        assert len(warnings) == 1 and "certificate" in warnings[0].lower(), warnings
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
