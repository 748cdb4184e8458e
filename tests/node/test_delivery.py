"""Delivery guarantees of a node, over a real broker: in order, exactly once, gaps reported.

Duplicate, out-of-order, missing and far-future seqs, a hold timed by the node's (simulated)
clock, and a producer clock that goes backwards; the node's SQLite file is read back after each
run. The rules themselves, without a broker: test_delivery_rules.py.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import ErrorMessage, Telemetry, encode_batch
from device.clock import Clock, SimulatedClock
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import DeliverySettings, NodeSettings
from tests.support.times import T0

DEVICE = "node-0007"

Answer = Telemetry | ErrorMessage


def node_settings(state_dir: Path, hold_s: float = 10.0) -> NodeSettings:
    return NodeSettings(
        DEVICE,
        state_dir,
        sgd=SGDConfig(learning_rate=0.05),
        delivery=DeliverySettings(hold_s=hold_s),
    )


class Peer:
    """A real MQTT client playing the stream: publishes batches, collects the node's answers."""

    def __init__(self, client: aiomqtt.Client, scenario: Scenario) -> None:
        self.client = client
        self.events = scenario.events(DEVICE)

    async def send(self, seq: int, t: float | None = None) -> None:
        event = self.events[(seq - 1) % len(self.events)]
        when = T0 + 60 * seq if t is None else t
        payload = encode_batch(event.x, event.y, seq=seq, t=when, source="test")
        await self.client.publish(f"vega/{DEVICE}/batch", payload, qos=1)

    async def answers(self, n: int, within_s: float = 30.0) -> list[Answer]:
        out: list[Answer] = []
        async with asyncio.timeout(within_s):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                kind = str(message.topic).rsplit("/", 1)[-1]
                if kind == "telemetry":
                    out.append(Telemetry.from_json(message.payload))
                else:
                    out.append(ErrorMessage.from_json(message.payload))
                if len(out) == n:
                    return out
        raise AssertionError("unreachable")


async def run(
    url: BrokerURL,
    bundle: ModelBundle,
    scenario: Scenario,
    state_dir: Path,
    script: Any,
    hold_s: float = 10.0,
    clock: Clock | None = None,
) -> None:
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        await client.subscribe(f"vega/{DEVICE}/telemetry", qos=1)
        await client.subscribe(f"vega/{DEVICE}/error", qos=1)
        async with Node(node_settings(state_dir, hold_s), bundle, url, clock=clock) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            await script(Peer(client, scenario))


def logged(state_dir: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(state_dir / f"{DEVICE}.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [(int(s), str(o)) for s, o in db.execute("SELECT seq, outcome FROM events")]


def state_row(state_dir: Path) -> tuple[int, int, int]:
    with sqlite3.connect(state_dir / f"{DEVICE}.db") as db:
        row = db.execute("SELECT last_seq, events_applied, gaps FROM state").fetchone()
    return int(row[0]), int(row[1]), int(row[2])


def kinds(answers: Sequence[Answer]) -> list[tuple[str, int | None]]:
    return [("telemetry", a.seq) if isinstance(a, Telemetry) else (a.code, a.seq) for a in answers]


async def test_early_batches_wait_for_the_missing_one(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(1)
        assert kinds(await peer.answers(1)) == [("telemetry", 1)]
        for seq in (4, 3, 2):  # 4 and 3 are held, unacknowledged, until 2 arrives
            await peer.send(seq)
        got = await peer.answers(3)
        assert kinds(got) == [("telemetry", 2), ("telemetry", 3), ("telemetry", 4)]
        assert all(isinstance(a, Telemetry) and a.gaps == 0 for a in got)

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script)
    assert logged(tmp_path) == [(s, "learned") for s in (1, 2, 3, 4)]
    assert state_row(tmp_path) == (4, 4, 0)


async def test_a_missing_seq_is_skipped_after_the_hold_and_reported(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(1)
        await peer.answers(1)
        await peer.send(4)
        await peer.send(5)  # 2 and 3 never come: after hold_s the node goes on with 4
        gap, four, five = await peer.answers(3)
        assert isinstance(gap, ErrorMessage) and gap.code == "gap" and gap.seq is None
        assert (gap.gap_first, gap.gap_last, gap.next_seq) == (2, 3, 4)
        assert kinds([four, five]) == [("telemetry", 4), ("telemetry", 5)]
        assert isinstance(five, Telemetry) and five.gaps == 2 and five.events == 3
        await peer.send(3)  # too late: it was skipped; answered, never applied
        await peer.send(4)  # a redelivery of a learned batch
        await peer.send(6)
        assert kinds(await peer.answers(3)) == [
            ("stale_seq", 3),
            ("duplicate", 4),
            ("telemetry", 6),
        ]

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script, hold_s=0.5)
    assert logged(tmp_path) == [(s, "learned") for s in (1, 4, 5, 6)]
    assert state_row(tmp_path) == (6, 4, 2)


async def test_the_hold_is_timed_by_the_nodes_clock(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    clock = SimulatedClock()

    async def script(peer: Peer) -> None:
        await peer.send(1)
        await peer.answers(1)
        await peer.send(4)  # held for an hour of the node's clock, not of the test's
        async with asyncio.timeout(10):
            await clock.wait_for_sleepers(1)  # the node waits for the hold deadline
        clock.advance(3600.0)
        gap, four = await peer.answers(2)
        assert isinstance(gap, ErrorMessage) and gap.code == "gap"
        assert (gap.gap_first, gap.gap_last, gap.next_seq) == (2, 3, 4)
        assert kinds([four]) == [("telemetry", 4)]

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script, 3600.0, clock)
    assert state_row(tmp_path) == (4, 2, 2)


async def test_a_duplicate_is_answered_and_changes_nothing(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(1)
        await peer.send(2)
        await peer.answers(2)
        before = weights(tmp_path)
        await peer.send(2)
        await peer.send(1)
        assert kinds(await peer.answers(2)) == [("duplicate", 2), ("duplicate", 1)]
        assert weights(tmp_path) == before

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script)
    assert logged(tmp_path) == [(1, "learned"), (2, "learned")]


def weights(state_dir: Path) -> list[tuple[str, bytes]]:
    with sqlite3.connect(state_dir / f"{DEVICE}.db") as db:
        return [(n, bytes(d)) for n, d in db.execute("SELECT name, data FROM weights")]


async def test_a_far_future_seq_is_refused_and_learning_goes_on(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(1)
        await peer.answers(1)
        await peer.send(10**12)
        await peer.send(2)
        refused, two = await peer.answers(2)
        assert isinstance(refused, ErrorMessage)
        assert (refused.code, refused.seq) == ("bad_metadata", 10**12)
        assert kinds([two]) == [("telemetry", 2)]

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script)
    assert logged(tmp_path) == [(1, "learned"), (2, "learned")]


async def test_a_clock_going_backwards_is_learned_from_without_harm(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(1, t=T0 + 3600)
        await peer.send(2, t=T0)  # captured "before" seq 1
        await peer.send(3, t=T0 + 3660)
        first, second, third = await peer.answers(3)
        assert kinds([first, second, third]) == [("telemetry", s) for s in (1, 2, 3)]
        assert isinstance(second, Telemetry) and second.energy_j["idle"] == 0.0
        assert isinstance(third, Telemetry) and third.energy_j["idle"] > 0.0
        assert third.lifetime_h is not None and third.lifetime_h > 0

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script)
    assert state_row(tmp_path) == (3, 3, 0)


@pytest.mark.parametrize("first", [2, 5])
async def test_a_new_node_waits_for_seq_one_then_starts_where_the_stream_does(
    embedded_broker: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    first: int,
) -> None:
    async def script(peer: Peer) -> None:
        await peer.send(first + 1)
        await peer.send(first)
        got = await peer.answers(2)
        # a node that never learned has nothing to report missing: no gap, no seq lost
        assert kinds(got) == [("telemetry", first), ("telemetry", first + 1)]

    await run(embedded_broker.url, default_bundle, digits_nic, tmp_path, script, hold_s=0.5)
    assert state_row(tmp_path) == (first + 1, 2, 0)


def test_error_messages_are_json_objects() -> None:
    error = ErrorMessage(DEVICE, "gap", "x", gap_first=2, gap_last=3, next_seq=4)
    assert json.loads(error.to_json())["gap_first"] == 2


async def test_a_second_copy_of_a_held_batch_is_acknowledged_not_left_in_flight(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    # Mosquitto: it resends a resumed session's unacknowledged messages (amqtt 0.12 does not)
    url: BrokerURL = mosquitto.url
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        await client.subscribe(f"vega/{DEVICE}/telemetry", qos=1)
        await client.subscribe(f"vega/{DEVICE}/error", qos=1)
        peer = Peer(client, digits_nic)
        async with Node(node_settings(tmp_path), default_bundle, url) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            await peer.send(1)
            await peer.answers(1)
            await peer.send(3)
            await peer.send(3)  # a producer re-publishing while 3 is held
            await peer.send(2)
            assert kinds(await peer.answers(2)) == [("telemetry", 2), ("telemetry", 3)]
        # a copy left unacknowledged would come back now and be answered `duplicate`
        async with Node(node_settings(tmp_path), default_bundle, url) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            await peer.send(4)
            assert kinds(await peer.answers(1)) == [("telemetry", 4)]
    assert logged(tmp_path) == [(s, "learned") for s in (1, 2, 3, 4)]
