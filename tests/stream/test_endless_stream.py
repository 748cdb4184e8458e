"""Endless streams on a real broker: a stream restarted at seq 500 publishes what an unbroken
stream publishes from 500, and ``stream --forever`` runs past the scenario's last event until
it is stopped."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiomqtt
import pytest

from broker import EmbeddedBroker
from broker.url import BrokerURL
from dataset_stream import StreamPublisher
from dataset_stream.endless import Drift, DriftKind, EndlessOptions, build_endless
from dataset_stream.protocol import Batch, decode_batch, parse_topic
from device.fleet.fleet import Fleet
from device.model.bundle import ModelBundle
from device.node.settings import NodeSettings
from tests.support.times import T0
from tests.support.wait import wait_until

DEVICES = ["node-0000", "node-0001"]
CADENCE_S = 60.0


async def published(
    url: BrokerURL, scenario: object, first: int, events: int, t0: float
) -> dict[tuple[str, int], Batch]:
    """The batches a paced publisher sends ``DEVICES`` from seq ``first`` (no node answers:
    nothing is waited for), as a subscriber on the broker receives them."""
    out: dict[tuple[str, int], Batch] = {}
    async with aiomqtt.Client(**url.client_kwargs()) as sub:
        await sub.subscribe("vega/+/batch", qos=1)
        async with StreamPublisher(
            url,
            scenario,  # type: ignore[arg-type]
            DEVICES,
            cadence_s=CADENCE_S,
            speed=60_000,
            events=events,
            from_seq=first,
            t0=t0,
            status_wait_s=0.1,
            drain_timeout_s=0,
        ) as publisher:
            await publisher.run()
        async with asyncio.timeout(30):
            async for message in sub.messages:
                device, _ = parse_topic("vega", message.topic.value)
                assert isinstance(message.payload, bytes)
                batch = decode_batch(
                    message.payload, sample_shape=(1, 32, 32), dtype="uint8", num_classes=10
                )
                out[(device, batch.seq)] = batch
                if len(out) == events * len(DEVICES):
                    break
    return out


async def test_a_stream_restarted_at_seq_500_sends_what_an_unbroken_one_sends(
    embedded_broker: EmbeddedBroker,
) -> None:
    options = EndlessOptions(drift=Drift(DriftKind.recurring, period_events=7))
    unbroken = await published(
        embedded_broker.url, build_endless("digits", "nic", options=options), 490, 20, T0
    )
    # another scenario object, as a new process builds it; its run starts at 500, 10 cadences
    # later in simulated time
    restarted = await published(
        embedded_broker.url,
        build_endless("digits", "nic", options=options),
        500,
        10,
        T0 + 10 * CADENCE_S,
    )
    assert sorted(restarted) == [(d, seq) for d in DEVICES for seq in range(500, 510)]
    for key, batch in restarted.items():
        want = unbroken[key]
        assert (batch.seq, batch.t, batch.source, batch.meta) == (
            want.seq,
            want.t,
            want.source,
            want.meta,
        )
        assert (batch.x == want.x).all() and (batch.y == want.y).all()
    a, b = restarted["node-0000", 500], restarted["node-0001", 500]
    assert a.x.shape != b.x.shape or not (a.x == b.x).all()  # each device its own events


@pytest.fixture
async def fleet(
    embedded_broker: EmbeddedBroker, default_bundle: ModelBundle, tmp_path: Path
) -> AsyncIterator[tuple[BrokerURL, Fleet]]:
    def settings(device: str) -> NodeSettings:
        return NodeSettings(device, tmp_path / "state")

    async with Fleet(DEVICES, settings, default_bundle, embedded_broker.url) as running:
        async with asyncio.timeout(60):
            for node in running.nodes.values():
                await node.connected.wait()
        yield embedded_broker.url, running


async def test_stream_forever_goes_past_the_last_event_until_stopped(
    fleet: tuple[BrokerURL, Fleet],
) -> None:
    url, running = fleet
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        *("-m", "device.cli", "stream", "--broker", f"mqtt://127.0.0.1:{url.port}"),
        *("--devices", "2", "--speed", "max", "--forever", "--from-seq", "75"),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "200"},
    )
    try:

        def learned_past_k() -> bool:
            engines = [node.engine for node in running.nodes.values()]
            return all(e is not None and (e.last_seq or 0) >= 82 for e in engines)

        await wait_until(learned_past_k, timeout_s=120, what="both nodes learned seq 82")
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(60):
            out, _ = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    text = out.decode()
    assert proc.returncode == 0, text
    assert "events until stopped x 2 devices, each from seq 75" in text
    assert "events past 77 are generated" in text
    assert "stopped" in text.splitlines()[-1], text


def test_up_events_past_the_last_go_on_into_generated_events(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    summary = tmp_path / "S.json"
    result = subprocess.run(
        [
            sys.executable,
            *("-m", "device.cli", "up", "--devices", "1", "--events", "80", "--quiet"),
            *("--model", str(default_bundle.path), "--no-report"),
            *("--summary-json", str(summary)),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"COLUMNS": "120"},
    )
    assert result.returncode == 0, result.stderr
    data = json.loads(summary.read_text())
    assert [d["events"] for d in data["devices"]] == [80]  # 77, then 3 generated
    assert data["stream"]["acked"] == 80
