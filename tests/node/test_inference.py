"""Inference on a live node over a real broker: answers, state left alone, energy, prequential."""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import (
    ErrorMessage,
    Prediction,
    Telemetry,
    encode_batch,
    encode_infer,
)
from device.energy import inference_cost
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.engine import NodeEngine
from device.node.node import Node
from device.node.settings import NodeSettings
from device.node.store import NodeStore
from tests.support.statefiles import db_fingerprint
from tests.support.times import T0

DEVICE = "node-0003"


def settings(state_dir: Path) -> NodeSettings:
    return NodeSettings(DEVICE, state_dir, sgd=SGDConfig(learning_rate=0.05))


@asynccontextmanager
async def watching(url: BrokerURL) -> AsyncIterator[aiomqtt.Client]:
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        for kind in ("telemetry", "error", "prediction"):
            await client.subscribe(f"vega/{DEVICE}/{kind}", qos=1)
        yield client


async def next_answer(client: aiomqtt.Client) -> Telemetry | ErrorMessage | Prediction:
    async with asyncio.timeout(20):
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            kind = message.topic.value.rsplit("/", 1)[-1]
            kinds = {"telemetry": Telemetry, "error": ErrorMessage, "prediction": Prediction}
            answer: Any = kinds[kind].from_json(message.payload)
            return answer  # type: ignore[no-any-return]
    raise AssertionError("stream ended")


def engine_of(node: Node) -> NodeEngine:
    assert node.engine is not None
    return node.engine


def learned_state(engine: NodeEngine) -> dict[str, Any]:
    """Everything inference must leave alone: weights, optimizer, LR memory, seqs, events."""
    return {
        "weights": {k: v.tobytes() for k, v in (engine.store.load_weights() or {}).items()},
        "head": {k: v.tobytes() for k, v in engine.head.params().items()},
        "replay": hashlib.sha256(
            json.dumps(
                engine.store.db.execute("SELECT * FROM lr_memory").fetchall(), default=str
            ).encode()
        ).hexdigest()
        if "lr_memory" in engine.store.db.table_names()
        else None,
        "replay_stats": engine.memory.stats(),
        "last_seq": engine.last_seq,
        "events": [e.seq for e in engine.store.events()],
    }


async def learn(client: aiomqtt.Client, scenario: Scenario, seq: int, **kw: Any) -> Telemetry:
    event = scenario.events(DEVICE)[seq - 1]
    payload = encode_batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="t", **kw)
    await client.publish(f"vega/{DEVICE}/batch", payload, qos=1)
    answer = await next_answer(client)
    assert isinstance(answer, Telemetry) and answer.seq == seq, answer
    return answer


async def test_inference_answers_and_charges_exactly_the_model(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    x_test, _ = digits_nic.eval_set
    x = x_test[:7]
    async with watching(url) as client, Node(settings(tmp_path), default_bundle, url) as node:
        await asyncio.wait_for(node.connected.wait(), 10)
        for seq in (1, 2):
            await learn(client, digits_nic, seq)
        engine = engine_of(node)
        before = learned_state(engine)
        remaining = engine.battery.remaining_j
        request = encode_infer(x, seq=1, t=T0 + 150, source="t", ids=np.arange(100, 107))
        await client.publish(f"vega/{DEVICE}/infer", request, qos=1)
        answer = await next_answer(client)
        assert isinstance(answer, Prediction), answer
        # the head's own forward on the frozen latents
        logits = engine.head.forward(node.frozen.run(x), train=False).astype(np.float64)
        prob = np.exp(logits - logits.max(axis=1, keepdims=True))
        prob /= prob.sum(axis=1, keepdims=True)
        assert (answer.seq, answer.t, answer.ids) == (1, T0 + 150, tuple(range(100, 107)))
        assert list(answer.classes) == logits.argmax(axis=1).tolist()
        np.testing.assert_allclose(answer.confidence, prob.max(axis=1), rtol=1e-9)
        # exactly the modelled energy, charged once
        cost = inference_cost(default_bundle.layers(), engine.profile, 7)
        assert dict(answer.energy_j) == cost.energy_j
        assert dict(answer.latency_s) == cost.latency_s
        assert engine.battery.remaining_j == remaining - cost.energy_j["total"]
        assert answer.battery is not None
        assert answer.battery.remaining_j == engine.battery.remaining_j
        assert learned_state(engine) == before
        # a repeated seq is answered again, the same classes, not charged again
        charged = engine.battery.remaining_j
        await client.publish(f"vega/{DEVICE}/infer", request, qos=1)
        again = await next_answer(client)
        assert isinstance(again, Prediction) and again.repeated
        assert again.classes == answer.classes and again.energy_j == answer.energy_j
        assert engine.battery.remaining_j == charged
        # the next event reports the inference and scores nothing (no ids in its batch)
        telemetry = await learn(client, digits_nic, 3)
        assert telemetry.inferences == 1
        assert telemetry.inference_energy_j == pytest.approx(cost.energy_j["total"])
        assert telemetry.prequential_n == 0 and telemetry.prequential_accuracy is None
    # the charge and the seq survive a restart: the repeat is still not charged
    with NodeStore.open(tmp_path, DEVICE, engine.store.meta.model_id) as store:
        state = store.state()
        assert state.inference.count == 1 and store.inference_samples(1) == 7
    async with watching(url) as client, Node(settings(tmp_path), default_bundle, url) as node:
        await asyncio.wait_for(node.connected.wait(), 10)
        engine = engine_of(node)
        charged = engine.battery.remaining_j
        await client.publish(f"vega/{DEVICE}/infer", request, qos=1)
        after_restart = await next_answer(client)
        assert isinstance(after_restart, Prediction) and after_restart.repeated
        assert after_restart.energy_j == answer.energy_j
        assert engine.battery.remaining_j == charged


async def test_bad_infer_payloads_get_an_error_and_change_nothing(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    x_test, y_test = digits_nic.eval_set
    x = x_test[:3]
    bad = {
        "bad_format": (5).to_bytes(8, "little") + b"{bad}",
        "bad_shape": encode_infer(x[:, :, :16], seq=2, t=T0, source="t"),
        "bad_dtype": encode_infer(x.astype(np.float32), seq=3, t=T0, source="t"),
        "bad_metadata": encode_batch(x, y_test[:3], seq=4, t=T0, source="t"),  # a batch
        "too_large": b"\x00" * (17 * 1024 * 1024),
    }
    async with watching(url) as client, Node(settings(tmp_path), default_bundle, url) as node:
        await asyncio.wait_for(node.connected.wait(), 10)
        await learn(client, digits_nic, 1)
        before = db_fingerprint(tmp_path, DEVICE)
        remaining = engine_of(node).battery.remaining_j
        for code, payload in bad.items():
            await client.publish(f"vega/{DEVICE}/infer", payload, qos=1)
            error = await next_answer(client)
            assert isinstance(error, ErrorMessage) and error.code == code, error
            assert error.seq is None  # never taken for a batch's seq
        assert db_fingerprint(tmp_path, DEVICE) == before
        assert engine_of(node).battery.remaining_j == remaining
        # the seq of a refused request is named when it could be read
        await client.publish(f"vega/{DEVICE}/infer", bad["bad_dtype"], qos=1)
        error = await next_answer(client)
        assert isinstance(error, ErrorMessage) and error.infer_seq == 3
        # still serving both inputs
        await client.publish(
            f"vega/{DEVICE}/infer", encode_infer(x, seq=2, t=T0 + 61, source="t"), qos=1
        )
        assert isinstance(await next_answer(client), Prediction)
        await learn(client, digits_nic, 2)


async def test_prequential_accuracy_is_scored_before_training(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    events = digits_nic.events(DEVICE)
    async with watching(url) as client, Node(settings(tmp_path), default_bundle, url) as node:
        await asyncio.wait_for(node.connected.wait(), 10)
        await learn(client, digits_nic, 1)
        upcoming = events[1]
        predicted = upcoming.indices[:10]
        request = encode_infer(
            upcoming.x[:10], seq=1, t=T0 + 90, source="t", ids=predicted.astype(np.int64)
        )
        await client.publish(f"vega/{DEVICE}/infer", request, qos=1)
        answer = await next_answer(client)
        assert isinstance(answer, Prediction)
        right = int((np.array(answer.classes) == upcoming.y[:10]).sum())
        # the labels arrive with the next batch, every sample named by its dataset row
        telemetry = await learn(client, digits_nic, 2, ids=upcoming.indices.astype(np.int64))
        assert telemetry.prequential_n == 10
        assert telemetry.prequential_accuracy == pytest.approx(right / 10)
        assert telemetry.inferences == 1
        engine = engine_of(node)
        assert engine.prequential.pending == 0
        assert engine.store.state().inference.preq_n == 10
        # the batch's samples are forgotten once scored: a next batch scores nothing more
        telemetry = await learn(client, digits_nic, 3, ids=events[2].indices.astype(np.int64))
        assert telemetry.prequential_n == 10 and telemetry.inferences == 0
