"""The downlink on real nodes over a real broker: desired state applied, persisted, reported.

A desired state is published retained (as ``vega-emu ctl`` does) on ``vega/{id}/desired``; the
node applies it before its next batch, keeps it in its state file, and answers on
``vega/{id}/reported`` (retained) or with a ``bad_desired`` error.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import encode_batch, encode_infer
from dataset_stream.protocol.desired import DesiredState
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.statefiles import db_fingerprint
from tests.support.times import T0


def settings(device: str, state_dir: Path) -> NodeSettings:
    return NodeSettings(device, state_dir, sgd=SGDConfig(learning_rate=0.05))


def desired(device: str, version: int, **values: Any) -> bytes:
    return DesiredState(device, version, values, ts=1.0, by="test").to_json()


def raw_desired(device: str, version: int, **values: Any) -> bytes:
    """A desired state as a careless writer might publish it: not checked."""
    return json.dumps({"device": device, "version": version, "settings": values}).encode()


class Answers:
    """Everything a node publishes about itself, by kind, as it arrives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Answers:
        self._task = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._task is not None
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)

    async def _read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            kind = message.topic.value.rsplit("/", 1)[-1]
            self.seen.append((kind, json.loads(message.payload)))
            self._arrived.set()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for k, m in self.seen if k == kind]

    async def count(self, kind: str, n: int, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """The messages of ``kind`` once there are ``n`` of them (waits for them)."""
        async with asyncio.timeout(timeout_s):
            while len(self.of(kind)) < n:
                self._arrived.clear()
                await self._arrived.wait()
        return self.of(kind)

    async def until(self, kind: str, timeout_s: float = 30.0, **match: Any) -> dict[str, Any]:
        """The first message of ``kind`` whose fields hold ``match`` (waits for it)."""
        async with asyncio.timeout(timeout_s):
            while True:
                for message in self.of(kind):
                    if all(message.get(k) == v for k, v in match.items()):
                        return message
                self._arrived.clear()
                await self._arrived.wait()


async def watch(client: aiomqtt.Client, device: str) -> None:
    for kind in ("telemetry", "error", "reported", "prediction"):
        await client.subscribe(f"vega/{device}/{kind}", qos=1)


def batch(scenario: Scenario, device: str, seq: int) -> bytes:
    event = scenario.events(device)[seq - 1]
    return encode_batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="t")


async def test_desired_set_while_offline_applies_at_the_first_event_and_persists(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    device = "node-0021"
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await watch(peer, device)
        async with Answers(peer) as answers:
            async with Node(settings(device, tmp_path), default_bundle, url) as node:
                await asyncio.wait_for(node.connected.wait(), 10)
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
                first = await answers.until("telemetry", seq=1)
                await answers.until("reported", version=0)
            # set while the node is not running: retained, it comes when the node connects
            await peer.publish(
                f"vega/{device}/desired",
                desired(device, 1, lr_bits=6, learning_rate=0.01, epochs=2),
                qos=1,
                retain=True,
            )
            async with Node(settings(device, tmp_path), default_bundle, url) as node:
                await asyncio.wait_for(node.connected.wait(), 10)
                assert node.engine is not None
                assert node.engine.memory.bits == 8  # pending: not before the next event
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
                second = await answers.until("telemetry", seq=2)
                reported = await answers.until("reported", version=1)
                assert node.engine.memory.bits == 6
                assert node.engine.optimizer.config.learning_rate == 0.01
                assert node.engine.settings.train.epochs == 2
            # a clean restart runs it still, and says so on connecting
            answers.seen.clear()
            async with Node(settings(device, tmp_path), default_bundle, url) as node:
                await asyncio.wait_for(node.connected.wait(), 10)
                assert node.engine is not None and node.engine.desired_version == 1
                assert node.engine.memory.bits == 6
                assert node.engine.optimizer.config.learning_rate == 0.01
                again = await answers.until("reported", version=1)
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 3), qos=1)
                third = await answers.until("telemetry", seq=3)
            assert not answers.of("error")  # the retained desired seen again is ignored
    assert first["replay"]["bits"] == 8 and second["replay"]["bits"] == 6
    per_lr = [m["replay"]["bytes"] / m["replay"]["size"] for m in (first, second)]
    assert per_lr[1] < per_lr[0] * 0.8  # 6 bits a value instead of 8 (and the same metadata)
    assert third["replay"]["bits"] == 6
    assert reported["seq"] == 1 and reported["refused"] is None
    assert reported["settings"] == {
        "lr_bits": 6,
        "lr_size": 1500,
        "learning_rate": 0.01,
        "epochs": 2,
        "mb_size": 128,
        "learning": True,
        "inference": True,
        "head": "own",
    }
    assert again["settings"] == reported["settings"]


async def test_invalid_desired_changes_nothing_and_is_answered(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    device = "node-0022"
    bad = [
        (raw_desired(device, 1, lr_bitz=6), "settings.lr_bitz"),
        (raw_desired(device, 2, lr_bits=9), "lr_bits"),
        (desired(device, 3, mb_size=8), "settings.mb_size"),  # below new_per_mb: plan refused
    ]
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await watch(peer, device)
        async with (
            Answers(peer) as answers,
            Node(settings(device, tmp_path), default_bundle, url) as node,
        ):
            await asyncio.wait_for(node.connected.wait(), 10)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            await answers.until("telemetry", seq=1)
            before = db_fingerprint(tmp_path, device)
            for n, (payload, _) in enumerate(bad, 1):
                await peer.publish(f"vega/{device}/desired", payload, qos=1, retain=True)
                await answers.count("error", n)
                assert db_fingerprint(tmp_path, device) == before
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
            second = await answers.until("telemetry", seq=2)
            assert node.engine is not None and node.engine.desired_version == 0
    errors = answers.of("error")
    assert [e["code"] for e in errors] == ["bad_desired"] * 3
    assert [e.get("desired_version") for e in errors] == [1, 2, 3]
    for error, (_, field) in zip(errors, bad, strict=True):
        assert field in error["message"]
    refused = [r for r in answers.of("reported") if r["refused"] is not None]
    assert len(refused) == 3 and all(r["version"] == 0 for r in refused)
    assert refused[-1]["refused"]["field"] == "settings.mb_size"
    assert second["replay"]["bits"] == 8 and second["events"] == 2


async def test_learning_and_inference_off(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    device = "node-0023"
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await watch(peer, device)
        async with (
            Answers(peer) as answers,
            Node(settings(device, tmp_path), default_bundle, url) as node,
        ):
            await asyncio.wait_for(node.connected.wait(), 10)
            assert node.engine is not None
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            await answers.until("telemetry", seq=1)
            weights = {k: v.copy() for k, v in node.engine.head.params().items()}
            lrs = node.engine.memory.contents()
            off = desired(device, 1, learning=False, inference=False)
            await peer.publish(f"vega/{device}/desired", off, qos=1, retain=True)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
            paused = await answers.until("telemetry", seq=2)
            await answers.until("reported", version=1)
            for key, value in node.engine.head.params().items():
                np.testing.assert_array_equal(value, weights[key])
            np.testing.assert_array_equal(node.engine.memory.contents()[0], lrs[0])
            event = digits_nic.events(device)[0]
            request = encode_infer(event.x[:4], seq=1, t=T0 + 150, source="t")
            await peer.publish(f"vega/{device}/infer", request, qos=1)
            refused = await answers.until("error", code="inference_off")
            on = desired(device, 2)  # every setting back to the node's own
            await peer.publish(f"vega/{device}/desired", on, qos=1, retain=True)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 3), qos=1)
            learned = await answers.until("telemetry", seq=3)
            back = await answers.until("reported", version=2)
    assert paused["state"] == "idle" and paused["samples"] == 0 and paused["events"] == 1
    assert paused["energy_j"]["adaptive"] == 0 and paused["battery"]["soc"] <= 1
    assert refused["infer_seq"] == 1 and not answers.of("prediction")
    assert learned["state"] == "learning" and learned["events"] == 2
    assert back["settings"]["learning"] is True and back["settings"]["inference"] is True
