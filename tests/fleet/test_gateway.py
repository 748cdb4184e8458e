"""Nodes behind one shared connection (``device.fleet.gateway``), on both brokers.

The kill and outage cases run the gateway too: ``test_fleet.py`` SIGKILLs a worker of a
``--connection shared`` fleet, ``test_fault_outage.py`` kills the broker under a gateway.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.protocol import ProtocolError, Status
from device.errors import NodeError
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway, gateway_topic, read_gateway_status
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.settings import NodeSettings
from device.observe.monitor import FleetMonitor
from tests.support.times import T0

IDS = ["node-0000", "node-0001", "node-0002"]


def settings(device: str, state_dir: Path) -> NodeSettings:
    return NodeSettings(device, state_dir, sgd=SGDConfig(lr=0.05))


async def test_nodes_behind_a_gateway_learn_every_batch_once_and_go_offline_with_it(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    offline: list[str] = []

    def seen(device: str, message: object, received: float) -> None:
        if isinstance(message, Status) and not message.online:
            offline.append(device)

    async with FleetMonitor(url, on_message=seen) as monitor:
        async with (
            Gateway(url, "gw-test", "vega", IDS) as gateway,
            Fleet(IDS, lambda d: settings(d, tmp_path), default_bundle, url, gateway=gateway),
            StreamPublisher(url, digits_nic, IDS, speed=None, events=6, t0=T0) as stream,
        ):
            stats = await stream.run()
            assert gateway.connections == 1
        async with asyncio.timeout(10):
            while monitor.gateways.get("gw-test") != "offline":
                monitor.activity.clear()
                await monitor.activity.wait()
    assert (stats.acked, stats.rejected, stats.lost) == (18, 0, 0)
    for device in IDS:
        with sqlite3.connect(tmp_path / f"{device}.db") as db:
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
        assert rows == [(s, "learned") for s in range(1, 7)], device
        assert monitor.devices[device].events == 6
    # each node said so itself on the clean stop; the gateway's offline found none still online
    assert sorted(offline) == IDS
    assert monitor.invalid == 0


def status(gateway: str, **fields: object) -> bytes:
    return json.dumps({"gateway": gateway, "state": "offline", "devices": IDS, **fields}).encode()


def test_a_gateway_status_reads_back() -> None:
    where = gateway_topic("vega", "gw-0")
    assert where == "vega/gateway/gw-0/status"
    assert read_gateway_status("vega", where, status("gw-0")) == ("gw-0", IDS, "offline")


@pytest.mark.parametrize(
    ("where", "payload", "words"),
    [
        ("vega/gateway/gw-0/telemetry", status("gw-0"), "not a gateway status"),
        ("vega/gateway/gw-0/status", b"{", "not JSON"),
        ("vega/gateway/gw-0/status", b"[]", "JSON object"),
        ("vega/gateway/gw-0/status", status("gw-1"), "not 'gw-0'"),
        ("vega/gateway/gw-0/status", status("gw-0", state="asleep"), "online or offline"),
        ("vega/gateway/gw-0/status", status("gw-0", devices=["a b"]), "list of device ids"),
        ("vega/gateway/gw-0/status", status("gw-0", devices="node-0000"), "list of device ids"),
    ],
)
def test_a_bad_gateway_status_is_refused_by_name(where: str, payload: bytes, words: str) -> None:
    with pytest.raises(ProtocolError, match=words):
        read_gateway_status("vega", where, payload)


async def test_a_monitor_ignores_a_bad_gateway_status(any_broker: Any) -> None:
    url: BrokerURL = any_broker.url
    async with FleetMonitor(url) as monitor:
        async with aiomqtt.Client(**url.client_kwargs()) as client:
            await client.publish(gateway_topic("vega", "gw-0"), b"not json", qos=1)
        async with asyncio.timeout(10):
            await monitor.wait_handled(1)
    assert monitor.invalid == 1 and monitor.gateways == {}


async def test_a_gateway_whose_loop_dies_says_so_and_its_nodes_are_not_left_waiting(
    tmp_path: Path,
) -> None:
    # the CA file vanished after the fleet was configured: not a network failure to retry
    url = BrokerURL(host="127.0.0.1", port=1, tls=True, ca_file=tmp_path / "gone.pem")
    async with Gateway(url, "gw-test", "vega", IDS) as gateway:
        async with asyncio.timeout(5):
            await gateway.failed.wait()
        assert gateway.failure is not None and "gone.pem" in gateway.failure
        with pytest.raises(NodeError, match=r"gw-test is not running: .*gone\.pem"):
            await gateway.attach(IDS[0])
