"""The fleet monitor: typed records, foreign and invalid messages counted, broker outages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from broker import EmbeddedBroker, Mosquitto, MosquittoConfig
from broker.url import BrokerURL
from dataset_stream.protocol import ErrorMessage, Status, Telemetry
from device.monitor import FleetMonitor, MonitorError
from device.mqtt import Backoff
from tests.conftest import require_mosquitto
from tests.test_publisher import telemetry

DEVICE = "node-0002"


async def settle(monitor: FleetMonitor, count: int) -> None:
    async with asyncio.timeout(10):
        await monitor.wait_handled(count)


async def test_records_hold_typed_messages(embedded_broker: EmbeddedBroker) -> None:
    url = embedded_broker.url
    status = Status("learning", device=DEVICE, last_seq=2)
    error = ErrorMessage(DEVICE, "bad_label", "label 12 >= 10", seq=3)
    async with FleetMonitor(url) as monitor, aiomqtt.Client(**url.client_kwargs()) as node:
        for seq in (2, 1, 2):  # out of order, then a redelivery
            await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, seq), qos=1)
        await node.publish(f"vega/{DEVICE}/status", status.to_json(), qos=1)
        await node.publish(f"vega/{DEVICE}/error", error.to_json(), qos=1)
        await settle(monitor, 5)
    rec = monitor.devices[DEVICE]
    assert isinstance(rec.telemetry, Telemetry) and isinstance(rec.first, Telemetry)
    assert (rec.telemetry.seq, rec.first.seq, rec.events, monitor.repeated) == (2, 1, 2, 1)
    assert rec.energy_j == pytest.approx(2 * rec.telemetry.energy_j["total"])
    assert rec.status == status and list(rec.recent_errors) == [error] and rec.errors == 1
    assert rec.state == "learning"
    assert (monitor.invalid, monitor.foreign) == (0, 0)


async def test_foreign_and_invalid_messages_are_counted(embedded_broker: EmbeddedBroker) -> None:
    url = embedded_broker.url
    foreign = [
        ("telemetry", telemetry("node-0003", 1)),  # another device's message on this topic
        ("error", ErrorMessage("node-0003", "bad_label", "x", seq=1).to_json()),
        ("status", Status("idle", device="node-0003").to_json()),
    ]
    invalid = [
        ("telemetry", b"{"),
        ("telemetry", b'{"device": "node-0002", "seq": 1}'),
        ("status", b'{"state": 3}'),
        ("error", b"[]"),
    ]
    async with FleetMonitor(url) as monitor, aiomqtt.Client(**url.client_kwargs()) as node:
        for kind, payload in foreign + invalid:
            await node.publish(f"vega/{DEVICE}/{kind}", payload, qos=1)
        await settle(monitor, len(foreign) + len(invalid))
    assert (monitor.foreign, monitor.invalid) == (len(foreign), len(invalid))
    assert DEVICE not in monitor.devices


async def test_an_unreachable_broker_is_a_clear_error() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        with pytest.raises(MonitorError, match=f"127.0.0.1:{port}"):
            async with FleetMonitor(BrokerURL("127.0.0.1", port), timeout=2):
                pytest.fail("connected to nothing")


@pytest.fixture
async def mosquitto_restartable(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    require_mosquitto()
    mosquitto = Mosquitto(MosquittoConfig(data_dir=tmp_path / "mosquitto", persistence=True))
    await mosquitto.start()
    try:
        yield mosquitto
    finally:
        await mosquitto.stop()


@pytest.mark.fault
async def test_monitor_survives_a_broker_restart(mosquitto_restartable: Mosquitto) -> None:
    broker = mosquitto_restartable
    url = broker.url
    async with asyncio.timeout(20):
        async with FleetMonitor(url, backoff=Backoff(initial_s=0.05, cap_s=0.5)) as monitor:
            async with aiomqtt.Client(**url.client_kwargs()) as node:
                await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 1), qos=1)
            await settle(monitor, 1)
            await broker.stop()
            await asyncio.sleep(1.0)
            await broker.start()
            async with aiomqtt.Client(**url.client_kwargs()) as node:
                await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 2), qos=1)
            await settle(monitor, 2)  # published before or after it came back: it arrives
            await asyncio.wait_for(monitor.connected.wait(), 5)
            reconnects = monitor.reconnects
    rec = monitor.devices[DEVICE]
    assert rec.events == 2 and rec.telemetry is not None and rec.telemetry.seq == 2
    assert reconnects == 1
