"""The bounds Mosquitto is configured with: computed from the protocol, enforced by a real broker.

The packet bound is checked byte for byte with a hand-written MQTT 3.1.1 client: Mosquitto
2.0 reads a PUBLISH's fixed header, compares the packet's length with ``max_packet_size``
and closes the connection at once when it is over -- before the payload is even sent.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import struct
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from broker import BrokerURL, Mosquitto, MosquittoConfig
from broker.limits import (
    LARGEST_BATCH_BYTES,
    LARGEST_EVAL_BYTES,
    MAX_HELD_BATCHES,
    MAX_PACKET_BYTES,
    MAX_QUEUED_BYTES,
    MQTT_MAX_PACKET_BYTES,
    PUBLISH_HEADER_MAX_BYTES,
    BrokerLimits,
)
from broker.mosquitto import render_config
from dataset_stream.protocol import decode_batch, decode_eval, decode_infer
from device.node.settings import DeliverySettings
from tests.support.mosquitto import require_mosquitto

TOPIC = "vega/node-0000/batch"
#: A small packet bound for the tests: what matters is the byte at the edge, not the size.
SMALL_PACKET_BYTES = 4096


def default_limits(decode: object) -> int:
    """``max_payload_bytes`` of the limits a decoder uses when given none."""
    limits = inspect.signature(decode).parameters["limits"].default  # type: ignore[arg-type]
    return int(limits.max_payload_bytes)


def test_the_bounds_are_computed_from_the_protocol() -> None:
    """If this fails, the protocol's limits changed: update broker/limits.py to match."""
    largest_batch = max(default_limits(decode_batch), default_limits(decode_infer))
    largest_eval = default_limits(decode_eval)
    assert (largest_batch, largest_eval) == (LARGEST_BATCH_BYTES, LARGEST_EVAL_BYTES)
    assert DeliverySettings().max_held == MAX_HELD_BATCHES
    largest_payload = max(largest_batch, largest_eval)
    assert min(largest_payload + PUBLISH_HEADER_MAX_BYTES, MQTT_MAX_PACKET_BYTES) == (
        MAX_PACKET_BYTES
    )
    assert MAX_HELD_BATCHES * largest_batch + largest_eval == MAX_QUEUED_BYTES
    # every valid payload fits with the longest topic MQTT allows
    assert largest_batch + PUBLISH_HEADER_MAX_BYTES <= MAX_PACKET_BYTES


def test_the_config_carries_the_bounds(tmp_path: Path) -> None:
    text = render_config(MosquittoConfig(data_dir=tmp_path), 1884)
    for line in (
        f"max_packet_size {MAX_PACKET_BYTES}",
        f"max_queued_bytes {MAX_QUEUED_BYTES}",
        "max_queued_messages 100000",
        "max_inflight_messages 100",
    ):
        assert f"\n{line}\n" in text


@pytest.mark.parametrize(
    "bad",
    [
        {"max_packet_bytes": 19},
        {"max_packet_bytes": MQTT_MAX_PACKET_BYTES + 1},
        {"max_queued_bytes": 0},
        {"max_queued_bytes": 2**31},
        {"max_queued_messages": 0},
    ],
)
def test_bounds_mosquitto_would_refuse_are_refused_when_built(bad: dict[str, int]) -> None:
    with pytest.raises(ValueError, match=next(iter(bad)).removesuffix("_bytes")):
        BrokerLimits(**bad)


# -- a real Mosquitto ----------------------------------------------------------------------------


def remaining_length(n: int) -> bytes:
    """MQTT's variable-length integer."""
    out = bytearray()
    while True:
        n, digit = divmod(n, 128)
        out.append(digit | (0x80 if n else 0))
        if not n:
            return bytes(out)


def mqtt_string(text: str) -> bytes:
    data = text.encode()
    return struct.pack("!H", len(data)) + data


class RawClient:
    """Just enough MQTT 3.1.1 to send a PUBLISH one piece at a time."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer

    @classmethod
    async def connect(cls, url: BrokerURL, client_id: str) -> RawClient:
        reader, writer = await asyncio.open_connection(url.host, url.port)
        body = mqtt_string("MQTT") + bytes([4, 0x02]) + struct.pack("!H", 60)
        body += mqtt_string(client_id)
        writer.write(b"\x10" + remaining_length(len(body)) + body)
        async with asyncio.timeout(5):
            assert await reader.readexactly(4) == b"\x20\x02\x00\x00", "CONNACK refused"
        return cls(reader, writer)

    async def publish_header(self, payload_bytes: int, packet_id: int = 1) -> None:
        """The fixed and variable header of a QoS 1 PUBLISH to :data:`TOPIC`, no payload."""
        variable = mqtt_string(TOPIC) + struct.pack("!H", packet_id)
        self.writer.write(b"\x32" + remaining_length(len(variable) + payload_bytes) + variable)
        await self.writer.drain()

    async def closed_by_broker(self) -> bool:
        """Whether the broker closes the connection (before it answers anything)."""
        try:
            async with asyncio.timeout(10):
                return await self.reader.read(1) == b""
        except ConnectionResetError:
            return True

    async def send_payload(self, payload: bytes) -> None:
        self.writer.write(payload)
        async with asyncio.timeout(5):
            assert await self.reader.readexactly(4) == b"\x40\x02\x00\x01", "no PUBACK"

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(OSError):  # the broker may have reset it
            await self.writer.wait_closed()


def payload_for_packet(mosquitto_packet_bytes: int) -> int:
    """Payload bytes of a PUBLISH to :data:`TOPIC` that Mosquitto counts as this long.

    Mosquitto 2.0.11 counts a packet as its first byte plus its Remaining Length (not the 1..4
    bytes that encode that length): 1 + (2 + topic + 2 + payload)."""
    return mosquitto_packet_bytes - 1 - (2 + len(TOPIC.encode()) + 2)


@pytest.fixture
async def small_packets(tmp_path: Path) -> AsyncIterator[Mosquitto]:
    require_mosquitto()
    limits = BrokerLimits(max_packet_bytes=SMALL_PACKET_BYTES)
    async with Mosquitto(MosquittoConfig(data_dir=tmp_path / "mq", limits=limits)) as broker:
        yield broker


@pytest.mark.mosquitto
async def test_a_packet_at_the_bound_passes(small_packets: Mosquitto) -> None:
    payload = b"p" * payload_for_packet(SMALL_PACKET_BYTES)
    async with aiomqtt.Client(**small_packets.url.client_kwargs()) as sub:
        await sub.subscribe(TOPIC, qos=1)
        raw = await RawClient.connect(small_packets.url, "at-the-bound")
        await raw.publish_header(len(payload))
        await raw.send_payload(payload)
        await raw.close()
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
    assert message.payload == payload


@pytest.mark.mosquitto
async def test_a_packet_one_byte_over_is_cut_off_before_its_payload(
    small_packets: Mosquitto,
) -> None:
    async with aiomqtt.Client(**small_packets.url.client_kwargs()) as sub:
        await sub.subscribe(TOPIC, qos=1)
        raw = await RawClient.connect(small_packets.url, "over-the-bound")
        await raw.publish_header(payload_for_packet(SMALL_PACKET_BYTES + 1))
        assert await raw.closed_by_broker()  # only the header was sent
        await raw.close()
        # the subscriber gets nothing of it: the next thing it sees is a marker sent after
        async with aiomqtt.Client(**small_packets.url.client_kwargs()) as pub:
            await pub.publish(TOPIC, b"marker", qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(sub.messages))
    assert message.payload == b"marker"
    log = (small_packets.config.data_dir / "mosquitto.log").read_text(encoding="utf-8")
    assert "Client over-the-bound disconnected due to oversize packet." in log


@pytest.mark.mosquitto
async def test_the_largest_valid_batch_passes_the_default_bounds(mosquitto: Mosquitto) -> None:
    payload = bytes(range(256)) * (LARGEST_BATCH_BYTES // 256)
    async with aiomqtt.Client(**mosquitto.url.client_kwargs(), timeout=60) as sub:
        await sub.subscribe(TOPIC, qos=1)
        async with aiomqtt.Client(**mosquitto.url.client_kwargs(), timeout=60) as pub:
            await pub.publish(TOPIC, payload, qos=1)
        async with asyncio.timeout(60):
            message = await anext(aiter(sub.messages))
    assert message.payload == payload


@pytest.mark.mosquitto
async def test_a_client_queue_is_bounded_in_bytes(tmp_path: Path) -> None:
    """Ten 1,000-byte messages fill a 10,000-byte queue exactly; the next ones are dropped."""
    require_mosquitto()
    limits = BrokerLimits(max_queued_bytes=10_000)
    async with Mosquitto(MosquittoConfig(data_dir=tmp_path / "mq", limits=limits)) as broker:
        kwargs = broker.url.client_kwargs()
        async with aiomqtt.Client(**kwargs, identifier="node-0000", clean_session=False) as node:
            await node.subscribe(TOPIC, qos=1)
        async with aiomqtt.Client(**kwargs) as stream:  # the node is away: all of it queues
            for i in range(12):
                await stream.publish(TOPIC, bytes([i]) * 1000, qos=1)
        got: list[int] = []
        async with aiomqtt.Client(**kwargs, identifier="node-0000", clean_session=False) as node:
            async with aiomqtt.Client(**kwargs) as stream:
                await stream.publish(TOPIC, b"marker", qos=1)  # sent once the node is back
            async with asyncio.timeout(10):
                async for message in node.messages:
                    assert isinstance(message.payload, bytes)
                    if message.payload == b"marker":
                        break
                    got.append(message.payload[0])
    assert got == list(range(10))
    log = (broker.config.data_dir / "mosquitto.log").read_text(encoding="utf-8")
    assert "Outgoing messages are being dropped for client node-0000." in log
