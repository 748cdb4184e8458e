"""The downlink on real nodes over a real broker: desired state applied, persisted, reported.

A desired state is published retained (as ``vega-emu ctl`` does) on ``vega/{id}/desired``; the
node applies it before its next batch, keeps it in its state file, and answers on
``vega/{id}/reported`` (retained) or with a ``bad_desired`` error.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import sqlite3
from dataclasses import replace
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import encode_batch, encode_infer
from dataset_stream.protocol.desired import DesiredState
from device.energy import DOWNLINK_J_PER_BYTE
from device.fleet.gateway import Gateway
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.engine import NodeEngine
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.cli import Command
from tests.support.statefiles import db_fingerprint
from tests.support.times import T0
from tests.support.wait import wait_until


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


def head_bytes(weights: dict[str, np.ndarray]) -> bytes:
    from safetensors.numpy import save

    return save({k: np.ascontiguousarray(v, dtype=np.float32) for k, v in weights.items()})


async def test_a_pushed_head_is_used_from_the_next_event_and_own_restores_the_old_one(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    device = "node-0024"
    rng = np.random.default_rng(5)
    pushed = {
        k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32)
        for k, v in default_bundle.weights.items()
    }
    wire = head_bytes(pushed)
    sha = hashlib.sha256(wire).hexdigest()
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await watch(peer, device)
        await peer.publish("vega/heads/v2/weights", wire, qos=1, retain=True)
        await peer.publish("vega/heads/bad/weights", wire + b" ", qos=1, retain=True)
        async with (
            Answers(peer) as answers,
            Node(settings(device, tmp_path), default_bundle, url) as node,
        ):
            await asyncio.wait_for(node.connected.wait(), 10)
            engine = node.engine
            assert engine is not None
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            await answers.until("telemetry", seq=1)
            own = {k: v.copy() for k, v in engine.head.params().items()}
            spent_before = engine.state.energy_totals.total_j
            # learning off keeps the head as loaded, so the test can look at it
            on_v2 = desired(device, 1, head="v2", head_sha256=sha, learning=False)
            await peer.publish(f"vega/{device}/desired", on_v2, qos=1, retain=True)
            await head_received(engine, 1)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
            await answers.until("telemetry", seq=2)
            on = await answers.until("reported", version=1)
            for key, value in engine.head.params().items():
                np.testing.assert_array_equal(value, pushed[key])
            assert engine.optimizer.state() == {}  # a pushed head starts afresh
            spent = engine.state.energy_totals.total_j - spent_before
            assert spent >= len(wire) * DOWNLINK_J_PER_BYTE
            # a head whose bytes are not the ones named: refused, nothing changes
            wrong = desired(device, 2, head="bad", head_sha256=sha, learning=False)
            await peer.publish(f"vega/{device}/desired", wrong, qos=1, retain=True)
            error = await answers.until("error", code="bad_desired")
            refused = await answers.until("reported", version=1, timeout_s=10, refused=ANY_REFUSAL)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 3), qos=1)
            await answers.until("telemetry", seq=3)
            for key, value in engine.head.params().items():
                np.testing.assert_array_equal(value, pushed[key])
            back = desired(device, 3, head="own", learning=False)
            await peer.publish(f"vega/{device}/desired", back, qos=1, retain=True)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 4), qos=1)
            await answers.until("telemetry", seq=4)
            restored = await answers.until("reported", version=3)
            for key, value in engine.head.params().items():
                np.testing.assert_array_equal(value, own[key])
            assert engine.store.own_head() is None
    assert on["settings"]["head"] == "v2" and on["settings"]["head_sha256"] == sha
    assert error["desired_version"] == 2 and "settings.head_sha256" in error["message"]
    assert refused["refused"]["version"] == 2
    assert restored["settings"]["head"] == "own" and restored["refused"] is None


async def head_received(engine: NodeEngine, version: int) -> None:
    """Until desired ``version`` is pending and has its pushed head (the node has no signal for
    it: it waits for its next batch)."""
    await wait_until(
        lambda: engine.desired_pending == version and engine.wanted_head() is None,
        20,
        what=f"desired version {version} pending with its head",
    )


class _AnyRefusal:
    def __eq__(self, other: object) -> bool:
        return isinstance(other, dict)


ANY_REFUSAL = _AnyRefusal()


async def test_a_shared_connection_gets_desired_states_and_heads(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    ids = ["node-0030", "node-0031"]
    wire = head_bytes(dict(default_bundle.weights))
    sha = hashlib.sha256(wire).hexdigest()
    balanced = replace(settings(ids[0], tmp_path).replay, class_balanced=True)
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        for device in ids:
            await watch(peer, device)
        await peer.publish("vega/heads/same/weights", wire, qos=1, retain=True)
        await peer.publish(
            f"vega/{ids[0]}/desired", desired(ids[0], 1, lr_size=40), qos=1, retain=True
        )
        async with (
            Answers(peer) as answers,
            Gateway(url, "gw-test", "vega", ids) as gateway,
            Node(
                replace(settings(ids[0], tmp_path), replay=balanced),
                default_bundle,
                url,
                gateway=gateway,
            ) as first,
            Node(settings(ids[1], tmp_path), default_bundle, url, gateway=gateway) as second,
        ):
            for node in (first, second):
                await asyncio.wait_for(node.connected.wait(), 10)
            on_head = desired(ids[1], 1, head="same", head_sha256=sha)
            await peer.publish(f"vega/{ids[1]}/desired", on_head, qos=1, retain=True)
            assert second.engine is not None
            await head_received(second.engine, 1)
            for device in ids:
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            small = await answers.until("telemetry", seq=1, device=ids[0])
            await answers.until("telemetry", seq=1, device=ids[1])
            shrunk = await answers.until("reported", version=1, device=ids[0])
            pushed = await answers.until("reported", version=1, device=ids[1])
            assert first.engine is not None
            counts = first.engine.memory.class_counts()
    assert small["replay"]["capacity"] == 40 and small["replay"]["size"] <= 40
    assert sum(counts.values()) == small["replay"]["size"]
    assert shrunk["settings"]["lr_size"] == 40
    assert pushed["settings"]["head"] == "same"


async def test_a_desired_state_survives_kill_9(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = mosquitto.url
    device = "node-0025"
    args = [
        "node",
        "--broker",
        str(url),
        "--id",
        device,
        "--state-dir",
        str(tmp_path),
        "--model",
        str(default_bundle.path),
    ]
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await watch(peer, device)
        await peer.publish(
            f"vega/{device}/desired", desired(device, 1, lr_bits=6), qos=1, retain=True
        )
        async with Answers(peer) as answers:
            async with Command(args) as node:
                await answers.until("reported", version=0, timeout_s=60)
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
                first = await answers.until("telemetry", seq=1, timeout_s=60)
                await answers.until("reported", version=1)
                node.send(signal.SIGKILL)
                await node.ended_within(10)
            answers.seen.clear()
            async with Command(args) as node:
                # on connecting, the version in force, read back from the state file
                again = await answers.until("reported", timeout_s=60)
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
                second = await answers.until("telemetry", seq=2, timeout_s=60)
                node.send(signal.SIGTERM)
                await node.ended_within(30)
    with sqlite3.connect(tmp_path / f"{device}.db") as db:
        stored = db.execute("SELECT version, settings, seq FROM desired").fetchall()
    assert first["replay"]["bits"] == second["replay"]["bits"] == 6
    assert again["version"] == 1 and again["settings"]["lr_bits"] == 6
    assert [row[:2] for row in stored] == [(1, '{"lr_bits": 6}')]
    assert not answers.of("error")
