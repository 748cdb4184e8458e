"""End-to-end delivery over real brokers: a batch the broker drops is published again until its
node answers it, learned once; the stream and the bridge wait for the last answers at their end
and say what got none (``docs/protocol.md``, "End-to-end delivery")."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from broker import EmbeddedBroker, Mosquitto
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.bridge import Bridge, BridgeSettings, Fields, Record, RecordKind, SampleSpec
from dataset_stream.outstanding import ResendPolicy
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.echo import EchoDevice
from tests.support.times import T0
from tests.support.wait import wait_until

QUICK = ResendPolicy(first_s=0.3, cap_s=1.0, max_resends=10)


async def stop(task: asyncio.Task[None]) -> None:
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def learned_seqs(state: Path, device: str) -> list[tuple[int, str]]:
    with sqlite3.connect(state / f"{device}.db") as db:
        return [(int(s), str(o)) for s, o in db.execute("SELECT seq, outcome FROM events")]


async def test_a_node_away_when_its_batches_go_gets_them_again_and_learns_each_once(
    mosquitto: Mosquitto, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """The node has never connected: the broker keeps no session for it and drops its batches.
    When it comes (its live status says so) the stream publishes them again."""
    url, device, state = mosquitto.url, "node-0000", tmp_path / "state"
    settings = NodeSettings(device, state, sgd=SGDConfig(learning_rate=0.05))
    async with asyncio.timeout(120):
        async with StreamPublisher(
            url, digits_nic, [device], speed=600, events=3, t0=T0, drain_timeout_s=90
        ) as stream:
            run = asyncio.create_task(stream.run())
            await wait_until(lambda: stream.sent == 3, timeout_s=30, what="3 batches published")
            async with Node(settings, default_bundle, url):
                stats = await run
    assert stats.complete and (stats.sent, stats.acked, stats.duplicates) == (3, 3, 0)
    assert stats.link.republished + stats.link.resent >= 3
    assert learned_seqs(state, device) == [(1, "learned"), (2, "learned"), (3, "learned")]


async def test_a_node_that_never_comes_leaves_its_seqs_unanswered(
    embedded_broker: EmbeddedBroker, digits_nic: Scenario
) -> None:
    async with asyncio.timeout(30):
        async with StreamPublisher(
            embedded_broker.url,
            digits_nic,
            ["node-0000", "node-0001"],
            speed=600,
            events=2,
            t0=T0,
            drain_timeout_s=1.5,
            resend=QUICK,
        ) as stream:
            stats = await stream.run()
    assert stats.delivery is not None and not stats.complete
    assert dict(stats.delivery.unanswered) == {"node-0000": (1, 2), "node-0001": (1, 2)}
    assert stats.delivery.exit_status == 3
    assert stats.link.resent >= 4  # each batch went again (into the void), with backoff
    assert 1.4 <= stats.drain_s < 5


async def run_stream_cli(*args: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "device.cli", "stream", *args),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "100"},
    )


async def test_the_stream_command_waits_for_answers_after_its_last_publish(
    embedded_broker: EmbeddedBroker,
) -> None:
    """A paced stream is done publishing long before its slow devices are done learning: it
    waits for them, and exits 0 only because every batch got its answer."""
    url = embedded_broker.url
    devices = [EchoDevice(url, f"node-000{i}", delay_s=0.3) for i in range(2)]
    tasks = [asyncio.create_task(d.run()) for d in devices]
    try:
        async with asyncio.timeout(60):
            for device in devices:
                await device.ready.wait()
            # 4 events per device at 600x: all published within 0.3 s; learned in 1.2 s
            cli = await run_stream_cli(
                *("--broker", f"mqtt://127.0.0.1:{url.port}", "--devices", "2"),
                *("--events", "4", "--speed", "600"),
            )
            _, err = await cli.communicate()
    finally:
        for task in tasks:
            await stop(task)
    text = " ".join(err.decode().split())
    assert cli.returncode == 0, text
    assert "sent 8/8 events to 2 devices" in text and "waiting for the last answers" in text
    assert "answered 8 of 8 batch(es): 8 learned, 0 duplicate" in text
    assert all(sorted(d.learned) == [1, 2, 3, 4] for d in devices)


SENSOR = SampleSpec((3, 4), "float32", 6)


async def four_windows() -> AsyncIterator[Record]:
    """Samples of ``dev-q`` in four one-minute windows (by their own time): four batches."""
    for i, t in enumerate((0, 60, 120, 180)):
        body = json.dumps({"x": list(range(12)), "y": i % 6, "t": t}).encode()
        yield Record(RecordKind.JSON, body, f"line {i + 1}", 1000.0)


async def test_a_bridge_batch_nobody_received_goes_again_until_its_node_answers(
    mosquitto: Mosquitto,
) -> None:
    """The device connects after the bridge sent its batches (the broker dropped them) and
    never says it is there: only the bridge's timeouts bring them, and it learns each once."""
    url = mosquitto.url
    settings = BridgeSettings(status_wait_s=0.2, drain_timeout_s=30, resend=QUICK)
    device = EchoDevice(url, "dev-q", in_order=True, announce=False)
    async with asyncio.timeout(60):
        async with Bridge(url, SENSOR, Fields(device="dev-q"), settings) as bridge:
            run = asyncio.create_task(bridge.run(four_windows(), replay=True))
            await wait_until(
                lambda: "dev-q" in bridge.tally.devices and bridge.tally.of("dev-q").batches == 4,
                timeout_s=20,
                what="the bridge published four batches",
            )
            node = asyncio.create_task(device.run())
            try:
                report = await run
            finally:
                await stop(node)
    assert device.learned == [1, 2, 3, 4]
    assert report.delivery.complete and report.delivery.learned == 4
    assert report.resent >= 4 and not report.stopped
    assert report.to_dict()["devices"]["dev-q"]["answers"]["learned"] == 4
