"""The Grafana dashboards under deploy/grafana: valid dashboard JSON, every query on a metric the gateway
serves (the status app's /metrics plus the runtime's counters) and docs/operations.md lists."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from aiohttp.test_utils import TestClient, TestServer
from prometheus_client import generate_latest

from gateway.runtime.counters import Counters
from gateway.status.app import make_app

REPO = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((REPO / "deploy" / "grafana").glob("*.json"))
SUFFIXES = ("_bucket", "_count", "_sum")


def queries(dashboard: dict[str, Any]) -> list[str]:
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(gateway_[a-z_]+)", expr))


def base(name: str) -> str:
    for suffix in SUFFIXES:
        if name.endswith(suffix):
            return name[: -len(suffix)]
    return name


def test_the_dashboards_are_valid_and_one_site_and_fleet_exist() -> None:
    assert {d.name for d in DASHBOARDS} == {"gateway-site.json", "gateway-fleet.json"}
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text())
        assert dashboard["uid"] and dashboard["title"] and dashboard["panels"]
        ids = [p["id"] for p in dashboard["panels"]]
        assert len(ids) == len(set(ids)), path.name
        for panel in dashboard["panels"]:
            assert panel["datasource"]["uid"] == "${datasource}"  # picked at import, not hard-wired
            for target in panel["targets"]:
                assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
        # every query is scoped by the instance variable (or is about the scrape itself)
        assert all("$instance" in q or "up{" in q for q in queries(dashboard)), path.name


async def test_every_metric_queried_is_served_and_documented() -> None:
    from support.status import Held  # the held status document of the app's tests

    client: TestClient[Any, Any] = TestClient(TestServer(make_app(Held()), host="127.0.0.1", port=0))
    await client.start_server()
    try:
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    text += generate_latest(Counters().registry).decode()
    served = {base(line.split("{")[0].split()[0]) for line in text.splitlines() if line and not line.startswith("#")}
    served |= {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    docs = (REPO / "docs" / "operations.md").read_text()
    for path in DASHBOARDS:
        for expr in queries(json.loads(path.read_text())):
            for name in metric_names(expr):
                assert base(name) in served or name in served, (path.name, name)
                assert f"`{base(name)}`" in docs or f"`{name}`" in docs, (path.name, name)
