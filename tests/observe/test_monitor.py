"""The fleet monitor: typed records, foreign and invalid messages counted, broker outages."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import EmbeddedBroker, Mosquitto, MosquittoConfig
from broker.backoff import Backoff
from broker.url import BrokerURL
from dataset_stream.protocol import ErrorMessage, Status, Telemetry
from device.observe.accounting import LAG_WINDOW, SEQ_WINDOW, DeviceRecord, LagStats, SeqWindow
from device.observe.errors import MonitorError
from device.observe.monitor import FleetMonitor
from tests.support.messages import telemetry
from tests.support.mosquitto import require_mosquitto

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
            async with FleetMonitor(BrokerURL("127.0.0.1", port), timeout_s=2):
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
            await asyncio.sleep(1.0)  # the outage under test: the broker is away this long
            await broker.start()
            async with aiomqtt.Client(**url.client_kwargs()) as node:
                await node.publish(f"vega/{DEVICE}/telemetry", telemetry(DEVICE, 2), qos=1)
            await settle(monitor, 2)  # published before or after it came back: it arrives
            await asyncio.wait_for(monitor.connected.wait(), 5)
            reconnects = monitor.reconnects
    rec = monitor.devices[DEVICE]
    assert rec.events == 2 and rec.telemetry is not None and rec.telemetry.seq == 2
    assert reconnects == 1


@given(st.lists(st.integers(min_value=0, max_value=400), max_size=300))
def test_seq_window_is_a_set_within_the_window(seqs: list[int]) -> None:
    window, seen = SeqWindow(), set[int]()
    for seq in seqs:
        high = max(seen, default=-1)
        new = window.add(seq)
        if seq > high - SEQ_WINDOW:  # within the window: exactly a set
            assert new == (seq not in seen)
        else:  # too old to tell: taken for a redelivery
            assert not new
        seen.add(seq)
    assert window.high == max(seen, default=-1)
    assert window.mask < 1 << SEQ_WINDOW  # bounded: memory does not grow with the seqs


def test_lag_percentiles_use_the_last_window_only() -> None:
    lag = LagStats()
    for i in range(LAG_WINDOW):
        lag.add(1000.0 + i)  # pushed out by the next ones
    for i in range(1, LAG_WINDOW + 1):
        lag.add(i / 1000)
    assert lag.percentile(0.5) == pytest.approx(0.5)
    assert lag.percentile(0.99) == pytest.approx(0.99)
    assert lag.count == 2 * LAG_WINDOW and lag.cumulative()[-1] == ("+Inf", 2 * LAG_WINDOW)


def test_device_memory_is_bounded_by_codes_not_messages() -> None:
    rec = DeviceRecord(DEVICE)
    for i in range(5000):
        rec.add_error(ErrorMessage(DEVICE, "bad_label" if i % 2 else f"x{i % 7}", "m", seq=i))
    assert rec.errors == 5000 and len(rec.recent_errors) == 5
    assert rec.errors_by_code == {"bad_label": 2500, "other": 2500}
    assert rec.rejected == {"bad_label": 2500}


async def test_on_message_sees_each_accepted_message_once(embedded_broker: EmbeddedBroker) -> None:
    url = embedded_broker.url
    seen: list[tuple[str, str, float]] = []
    status = Status("idle", device=DEVICE)
    error = ErrorMessage(DEVICE, "duplicate", "seq 1 again", seq=1)

    def hook(device: str, message: Telemetry | Status | ErrorMessage, received: float) -> None:
        seen.append((device, type(message).__name__, received))

    async with (
        FleetMonitor(url, on_message=hook, clock=lambda: 42.0) as monitor,
        aiomqtt.Client(**url.client_kwargs()) as node,
    ):
        for kind, payload in [
            ("telemetry", telemetry(DEVICE, 1)),
            ("telemetry", telemetry(DEVICE, 1)),  # repeated: not passed on
            ("telemetry", b"{"),  # invalid: not passed on
            ("status", status.to_json()),
            ("error", error.to_json()),
            ("prediction", b"counted, never decoded"),
        ]:
            await node.publish(f"vega/{DEVICE}/{kind}", payload, qos=1)
        await settle(monitor, 6)
    assert seen == [
        (DEVICE, "Telemetry", 42.0),
        (DEVICE, "Status", 42.0),
        (DEVICE, "ErrorMessage", 42.0),
    ]
    assert monitor.accepted == {"telemetry": 1, "status": 1, "error": 1, "prediction": 1}
    assert monitor.record(DEVICE).duplicates == 1
    assert monitor.record(DEVICE).predictions == 1
    assert monitor.record(DEVICE).prediction_received == 42.0
