"""Eval sets shared by reference, on real nodes over a real broker: one retained set per
distinct content, a small reference per device, the digest checked, per-device sets still
accepted, and the set kept in the state directory across a kill -9."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.payloads import eval_payload, eval_ref
from dataset_stream.protocol import encode_batch, is_eval_ref
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.dispatch import EVAL_WAIT_S
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.cli import Command
from tests.support.times import T0

MARK = "vega/evalsets/end-of-retained/set"


def settings(device: str, state_dir: Path) -> NodeSettings:
    return NodeSettings(device, state_dir, sgd=SGDConfig(learning_rate=0.05))


def batch(scenario: Scenario, device: str, seq: int) -> bytes:
    event = scenario.events(device)[seq - 1]
    return encode_batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="t")


async def retained(url: BrokerURL, where: str) -> dict[str, bytes]:
    """Every retained message under the filter ``where`` (``.../#``), read up to a marker
    published after the subscription: the broker sends the retained ones first."""
    out: dict[str, bytes] = {}
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await peer.subscribe(where, qos=1)
        await peer.subscribe(MARK, qos=1)
        await peer.publish(MARK, b"end", qos=1)
        async with asyncio.timeout(20):
            async for message in peer.messages:
                if str(message.topic) == MARK:
                    return out
                assert isinstance(message.payload, bytes) and message.retain
                out[str(message.topic)] = message.payload
    raise AssertionError("no marker")


class Answers:
    """What a node publishes about itself (telemetry, error, reported), as it arrives."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.seen: list[tuple[str, dict[str, Any]]] = []
        self._arrived = asyncio.Event()

    def of(self, kind: str) -> list[dict[str, Any]]:
        return [m for k, m in self.seen if k == kind]

    async def read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            self.seen.append((str(message.topic).rsplit("/", 1)[-1], json.loads(message.payload)))
            self._arrived.set()

    async def when(self, condition: Callable[[], bool], timeout_s: float = 60.0) -> None:
        """Wait until ``condition()`` holds, looked at as each message arrives."""
        async with asyncio.timeout(timeout_s):
            while not condition():
                self._arrived.clear()
                await self._arrived.wait()

    async def until(self, kind: str, timeout_s: float = 60.0, **match: Any) -> dict[str, Any]:
        async with asyncio.timeout(timeout_s):
            while True:
                for message in self.of(kind):
                    if all(message.get(k) == v for k, v in match.items()):
                        return message
                self._arrived.clear()
                await self._arrived.wait()


@contextlib.asynccontextmanager
async def answers_of(url: BrokerURL, device: str) -> AsyncIterator[tuple[aiomqtt.Client, Answers]]:
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        for kind in ("telemetry", "error", "reported"):
            await peer.subscribe(f"vega/{device}/{kind}", qos=1)
        answers = Answers(peer)
        reader = asyncio.create_task(answers.read())
        try:
            yield peer, answers
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


@pytest.mark.parametrize("shared", [False, True], ids=["own-connection", "gateway"])
async def test_devices_of_one_scenario_share_one_retained_set(
    mosquitto: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    shared: bool,
) -> None:
    url: BrokerURL = mosquitto.url
    ids = ["node-0000", "node-0001", "node-0002"]
    async with contextlib.AsyncExitStack() as stack:
        gateway = None
        if shared:
            gateway = await stack.enter_async_context(Gateway(url, "gw-test", "vega", ids))
        await stack.enter_async_context(
            Fleet(ids, lambda d: settings(d, tmp_path), default_bundle, url, gateway=gateway)
        )
        stream = await stack.enter_async_context(
            StreamPublisher(url, digits_nic, ids, speed=None, events=2, t0=T0)
        )
        peer = await stack.enter_async_context(aiomqtt.Client(**url.client_kwargs()))
        await peer.subscribe("vega/+/telemetry", qos=1)
        answers = Answers(peer)
        reader = asyncio.create_task(answers.read())
        stats = await stream.run()
        for device in ids:
            await answers.until("telemetry", device=device, seq=2)
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    assert (stats.acked, stats.eval_sent, stream.evalsets_sent) == (6, 3, 1)
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    assert await retained(url, "vega/evalsets/#") == {ref.topic("vega"): payload}
    refs = await retained(url, "vega/+/eval")
    assert refs == {f"vega/{d}/eval": ref.to_json() for d in ids}
    assert all(is_eval_ref(r) and len(r) < 512 for r in refs.values())
    for device in ids:  # every node measured on the shared set, and kept it
        assert all(t["accuracy"] is not None for t in answers.of("telemetry"))
        assert (tmp_path / f"{device}.eval.safetensors").read_bytes() == payload


async def test_a_tampered_set_is_refused_and_the_node_keeps_serving(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = mosquitto.url
    device = "node-0011"
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    tampered = bytearray(payload)
    tampered[-1] ^= 1  # one label's byte: still a valid set, not the referenced one
    async with answers_of(url, device) as (peer, answers):
        await peer.publish(ref.topic("vega"), bytes(tampered), qos=1, retain=True)
        await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Node(settings(device, tmp_path), default_bundle, url) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            error = await answers.until("error", code="eval_mismatch")
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            first = await answers.until("telemetry", seq=1)
            # the right set, published again on its topic, is taken
            await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
            second = await answers.until("telemetry", seq=2)
    assert ref.sha256 in error["message"] and "seq" not in error
    assert first["accuracy"] is None  # the tampered set was never used
    assert second["accuracy"] is not None
    assert (tmp_path / f"{device}.eval.safetensors").read_bytes() == payload
    assert [e["code"] for e in answers.of("error")] == ["eval_mismatch"]


async def test_an_old_per_device_set_still_works_and_a_reference_to_it_fetches_nothing(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    device = "node-0012"
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    async with answers_of(url, device) as (peer, answers):
        await peer.publish(f"vega/{device}/eval", payload, qos=1, retain=True)
        async with Node(settings(device, tmp_path), default_bundle, url) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            first = await answers.until("telemetry", seq=1)
            # the same set by reference, never published on its shared topic: nothing to fetch
            await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
            second = await answers.until("telemetry", seq=2)
    assert first["accuracy"] is not None
    assert second["accuracy"] is not None
    assert not answers.of("error")


async def test_a_node_killed_with_the_set_saved_does_not_need_it_again(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = mosquitto.url
    device = "node-0013"
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
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
    async with answers_of(url, device) as (peer, answers):
        await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
        await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Command(args) as node:
            await answers.until("reported")  # connected: its session is at the broker
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            first = await answers.until("telemetry", seq=1)
            node.send(signal.SIGKILL)
            await node.ended_within(10)
        # the shared set is gone from the broker: a node that needed it would go without
        await peer.publish(ref.topic("vega"), b"", qos=1, retain=True)
        assert await retained(url, "vega/evalsets/#") == {}
        async with Command(args) as node:
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 2), qos=1)
            second = await answers.until("telemetry", seq=2)
            node.send(signal.SIGTERM)
            await node.ended_within(30)
    assert first["accuracy"] is not None
    assert second["accuracy"] is not None
    # killed between seq 1's telemetry and its acknowledgement, the node gets seq 1 again from
    # the broker and answers it as a duplicate (exactly once); nothing else is an error
    errors = answers.of("error")
    assert all(e["code"] == "duplicate" and e["seq"] == 1 for e in errors), errors


async def test_batches_wait_for_a_referenced_set_that_never_comes_then_are_learned(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    device = "node-0014"
    ref = eval_ref(digits_nic, eval_payload(digits_nic))
    async with answers_of(url, device) as (peer, answers):
        await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Node(settings(device, tmp_path), default_bundle, url) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            loop = asyncio.get_running_loop()
            sent = loop.time()
            for seq in (1, 2):
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, seq), qos=1)
            second = await answers.until("telemetry", seq=2, timeout_s=60)
            waited_s = loop.time() - sent
    assert waited_s >= EVAL_WAIT_S - 1.0  # held while the set might still come
    assert [t["seq"] for t in answers.of("telemetry")] == [1, 2]  # in order, each once
    assert second["accuracy"] is None and not answers.of("error")


async def test_a_restarted_node_reports_the_accuracy_of_its_head_before_its_next_batch(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """A node that starts again with events learned measures its head on the set it holds and
    says so in its status at once: a stream waiting for the set to be in use does not wait for
    a batch that it has not sent yet."""
    url: BrokerURL = mosquitto.url
    device = "node-0021"
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    args = ["node", "--broker", str(url), "--id", device, "--state-dir", str(tmp_path)]
    args += ["--model", str(default_bundle.path)]
    async with answers_of(url, device) as (peer, answers):
        await peer.subscribe(f"vega/{device}/status", qos=1)
        await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
        await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Command(args) as node:
            await answers.until("reported")
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
            learned = await answers.until("telemetry", seq=1)
            node.send(signal.SIGTERM)
            await node.ended_within(30)
        before = len(answers.of("status"))
        async with Command(args) as node:
            await answers.when(
                lambda: any(
                    s.get("state") == "idle" and s.get("accuracy") is not None
                    for s in answers.of("status")[before:]
                ),
                timeout_s=30,
            )
            node.send(signal.SIGTERM)
            await node.ended_within(30)
    restarted = [s for s in answers.of("status")[before:] if s.get("accuracy") is not None]
    assert restarted[0]["accuracy"] == learned["accuracy"]  # the same head, the same set
    assert restarted[0]["events"] == 1
    assert len(answers.of("telemetry")) == 1  # measured outside any event
