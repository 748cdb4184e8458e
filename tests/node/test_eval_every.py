"""Accuracy measured every k learned events: which events measure, what the others carry."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from typer.testing import CliRunner

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import (
    Batch,
    EvalSet,
    Status,
    Telemetry,
    encode_batch,
    encode_eval,
    validate_telemetry,
)
from device.cli import app
from device.fleet.errors import FleetSpecError
from device.fleet.spec import DeviceClass
from device.learning.learner import EVAL_CHUNK, evaluate
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.classbook import ClassBook
from device.node.engine import NodeEngine
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.times import T0


def engine(bundle: ModelBundle, state_dir: Path, eval_every: int) -> NodeEngine:
    settings = NodeSettings("n0", state_dir, eval_every=eval_every)
    return NodeEngine(settings, bundle, FrozenStage.shared(bundle))


def learn(
    bundle: ModelBundle, scenario: Scenario, state_dir: Path, eval_every: int, n: int
) -> list[Telemetry]:
    """The telemetry of ``n`` events of a node measuring every ``eval_every`` learned events,
    its factory point measured first."""
    eng = engine(bundle, state_dir, eval_every)
    ex, ey = scenario.eval_set
    eng.set_eval(EvalSet(ex, ey, "digits"))
    assert eng.measure_factory() is not None
    out = []
    for i, event in enumerate(scenario.events("node-0000", True)[:n], 1):
        batch = Batch(event.x, event.y, seq=i, t=T0 + 60 * i, source="digits")
        out.append(eng.apply(batch).telemetry)
    eng.close()
    return out


def test_k3_measures_at_events_3_and_6_and_carries_between(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    every = learn(default_bundle, digits_nic, tmp_path / "k1", 1, 7)
    third = learn(default_bundle, digits_nic, tmp_path / "k3", 3, 7)
    assert [t.events for t in third] == list(range(1, 8))
    # measured at 3 and 6 only (and the factory, event 0)
    assert [t.accuracy_events for t in third] == [0, 0, 3, 3, 3, 6, 6]
    # measuring less often changes nothing of what is learned: the measured points are K=1's
    for k1, k3 in zip(every, third, strict=True):
        assert k1.accuracy_events is None
        assert "accuracy_events" not in k1.to_dict()
        assert k1.energy_j == k3.energy_j and k1.battery == k3.battery
    for n in (3, 6):
        assert third[n - 1].accuracy == every[n - 1].accuracy
        assert third[n - 1].accuracy_by_class == every[n - 1].accuracy_by_class
        # (forgetting differs: its best earlier accuracy is over fewer measurements)
    # events 4 and 5 carry event 3's measurement; 1 and 2 the factory's
    for n in (4, 5):
        assert third[n - 1].accuracy == every[2].accuracy
        assert third[n - 1].accuracy_by_class == every[2].accuracy_by_class
        assert third[n - 1].to_dict()["accuracy_events"] == 3
    assert third[6].accuracy == every[5].accuracy
    assert third[0].accuracy == third[1].accuracy
    # round trip of the new field
    assert Telemetry.from_json(third[3].to_json()).accuracy_events == 3


def test_a_carried_measurement_does_not_move_the_class_records(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    third = learn(default_bundle, digits_nic, tmp_path, 3, 5)
    assert third[3].classes is not None and third[4].classes is not None
    # forgetting and backward transfer are those of event 3's measurement until event 6
    for name in ("forgetting", "forgetting_max", "forgetting_by_class"):
        assert getattr(third[3].classes, name) == getattr(third[2].classes, name)
        assert getattr(third[4].classes, name) == getattr(third[2].classes, name)


def test_a_bad_eval_every_is_refused(tmp_path: Path) -> None:
    for bad in (0, -2):
        with pytest.raises(ValueError, match="eval_every must be an integer >= 1"):
            NodeSettings("n0", tmp_path, eval_every=bad)
    result = CliRunner().invoke(
        app, ["node", "--id", "n0", "--state-dir", str(tmp_path), "--eval-every", "0"]
    )
    assert result.exit_code == 2
    assert "--eval-every" in result.output and ">= 1" in result.output
    with pytest.raises(FleetSpecError, match="eval_every must be an integer >= 1"):
        DeviceClass.from_dict({"name": "a", "count": 1, "eval_every": 0})
    assert DeviceClass.from_dict({"name": "a", "count": 1, "eval_every": 5}).eval_every == 5


def test_evaluation_in_chunks_is_bit_for_bit_the_whole_batch(
    default_bundle: ModelBundle, digits_nic: Scenario
) -> None:
    ex, ey = digits_nic.eval_set
    frozen = FrozenStage.shared(default_bundle)
    latents = frozen.run(ex)
    head = default_bundle.build_head()
    assert len(ey) > 2 * EVAL_CHUNK
    whole = head.forward(latents, train=False).argmax(axis=1)
    chunked = head.predict(latents, batch_size=EVAL_CHUNK)
    np.testing.assert_array_equal(whole, chunked)
    got = evaluate(head, latents, ey)
    hit = whole == ey
    assert got.accuracy == float(hit.mean())
    assert got.per_class == {int(c): float(hit[ey == c].mean()) for c in np.unique(ey)}


async def test_a_node_over_a_broker_measures_every_k_events(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    device = "node-0000"
    ex, ey = digits_nic.eval_set
    events = digits_nic.events(device, True)
    settings = NodeSettings(device, tmp_path, eval_every=3)
    telemetry: list[Telemetry] = []
    async with (
        aiomqtt.Client(**url.client_kwargs()) as client,
        Node(settings, default_bundle, url) as node,
    ):
        for kind in ("telemetry", "status"):
            await client.subscribe(f"vega/{device}/{kind}", qos=1)
        await asyncio.wait_for(node.connected.wait(), 10)
        payload = encode_eval(ex, ey, source="digits")
        await client.publish(f"vega/{device}/eval", payload, qos=1, retain=True)
        async with asyncio.timeout(60):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.topic.value.endswith("/status"):
                    status = Status.from_json(message.payload)
                    if status.events == 0 and status.accuracy is not None:
                        break  # the factory point (event 0): batches from now on
        for seq in range(1, 8):
            event = events[seq - 1]
            batch = encode_batch(event.x, event.y, seq=seq, t=T0 + 60 * seq, source="digits")
            await client.publish(f"vega/{device}/batch", batch, qos=1)
        async with asyncio.timeout(120):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if message.topic.value.endswith("/telemetry"):
                    validate_telemetry(json.loads(message.payload))  # the schema knows it
                    telemetry.append(Telemetry.from_json(message.payload))
                    if len(telemetry) == 7:
                        break
    assert [t.seq for t in telemetry] == list(range(1, 8))
    assert [t.accuracy_events for t in telemetry] == [0, 0, 3, 3, 3, 6, 6]
    assert telemetry[3].accuracy == telemetry[4].accuracy == telemetry[2].accuracy
    assert telemetry[3].accuracy_by_class == telemetry[2].accuracy_by_class


def test_a_class_trained_between_measurements_takes_the_next_one_as_after_training() -> None:
    book = ClassBook.new([0]).after_factory_evaluation({0: 0.9, 1: 0.0})
    book = book.after_event(1, T0, {1}, None, trained_since=0)  # not measured
    metrics = book.metrics(1, T0, 10, measured_at=0)
    # class 1 trained after the latest measurement: nothing to say of it yet
    assert metrics.backward_transfer_by_class == {}
    assert metrics.forgetting_by_class == {}
    book = book.after_event(2, T0 + 60, {0}, {0: 0.8, 1: 0.7}, trained_since=0)  # measured
    row = book.rows[1]
    assert row.trained_accuracy == 0.7 and row.last_trained_event == 1  # its first measurement
    book = book.after_event(3, T0 + 120, {0}, None, trained_since=2)  # carried
    assert book.rows[1] == row
    metrics = book.metrics(3, T0 + 120, 10, measured_at=2)
    assert metrics.backward_transfer_by_class == {1: 0.0}
    assert metrics.events_since_class == {0: 0, 1: 2}  # counted to the event in hand
