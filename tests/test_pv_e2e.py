"""`gateway run` end to end on a solar site: a `pv` charger follows the surplus the SunSpec inverter makes, as
the operator sees it on /api/status and /metrics, and the operator switches it to `now` over the API."""

from __future__ import annotations

import asyncio
import json
import urllib.request
from pathlib import Path

import pytest
from support.gateway_process import Gateway, get_json
from support.pv_site import pv_site
from support.waiting import until

TOKEN = "pv-e2e-token-0123456789"


async def post(url: str, body: dict[str, object]) -> int:
    def send() -> int:
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST",
                                         headers={"Authorization": f"Bearer {TOKEN}"})
        with urllib.request.urlopen(request, timeout=5) as response:
            return int(response.status)

    return await asyncio.to_thread(send)


@pytest.mark.slow
async def test_gateway_run_charges_a_pv_car_from_the_surplus_only(tmp_path: Path) -> None:
    async with pv_site() as site:
        car = site.chargers["ev3"]
        text = site.config_text(tmp_path / "gw.sqlite", "start_delay_s = 1\nstop_delay_s = 2")
        text = text.replace("[status]\nport = 0", f'[status]\nport = 0\ntoken = "{TOKEN}"')
        config = tmp_path / "site.toml"
        config.write_text(text)
        gateway = Gateway(config)
        try:
            url = await gateway.status_url()
            await until(lambda: car.setpoint_a is not None, 20, "the charger was never set")
            car.plug_in(ev_max_a=32.0, phases=3)
            await asyncio.sleep(2.5)
            assert car.limit_a == 0.0, "a pv car charged with no sun"
            site.inverter.set(pv_kw=9.0)
            await until(lambda: car.limit_a >= 11.0, 15, "the pv car never took the surplus")

            async def handed() -> bool:
                return bool((await get_json(url + "api/status"))["pv"]["handed_kw"] > 6.0)

            await until(handed, 10, "the status never showed the surplus going to the car")
            pv = (await get_json(url + "api/status"))["pv"]
            assert pv["chargers"]["ev3"]["mode"] == "pv" and pv["pv_kw"] == pytest.approx(9.0, abs=0.05)
            assert pv["import_kw"] == pytest.approx(0.0, abs=0.1), "the pv car made the site import"
            metrics = await asyncio.to_thread(
                lambda: urllib.request.urlopen(url + "metrics", timeout=5).read().decode())
            assert 'gateway_evse_mode{evse="ev3",mode="pv"} 1.0' in metrics and "gateway_pv_watts 9000.0" in metrics
            site.inverter.set(pv_kw=1.0)
            await until(lambda: car.limit_a == 0.0, 15, "the pv car did not stop when the sun went")
            assert await post(url + "api/evses/ev3/mode", {"mode": "now"}) == 200
            await until(lambda: car.limit_a >= 30.0, 15, "now mode did not charge at full speed")
            log = await gateway.terminate()
            assert "operator write=mode charger=ev3 mode=now" in log
            assert "sunspec inverter=roof base=40000 models=1,103,802" in log
            assert "Traceback" not in log
        finally:
            gateway.close()
