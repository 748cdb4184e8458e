"""``stream --infer-rate``: the inference requests a stream sends, and what nodes make of them."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from broker import BrokerURL
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.inference import InferSchedule
from dataset_stream.protocol import decode_batch, decode_infer
from device.fleet.fleet import Fleet
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.settings import NodeSettings
from device.observe.monitor import FleetMonitor
from tests.support.times import T0
from tests.support.wait import wait_for_monitor, wait_for_telemetry, wait_until


def test_schedule_arithmetic() -> None:
    assert InferSchedule(1, 60).messages_per_interval == 60
    assert InferSchedule(2, 3).seconds == ((0, 2), (1, 2), (2, 2))
    assert InferSchedule(0.5, 4).seconds == ((1, 1), (3, 1))  # one sample every 2 s
    assert InferSchedule(1.5, 2).seconds == ((0, 1), (1, 2))
    assert InferSchedule(2, 3).messages(events=4) == 9
    with pytest.raises(ValueError, match="infer rate"):
        InferSchedule(0, 60)


def test_requests_hold_the_next_event_with_stable_seqs(digits_nic: Scenario) -> None:
    schedule = InferSchedule(2, 3)
    event = digits_nic.events("node-0000")[2]  # seq 3: the interval after event 2
    plan = schedule.payloads(digits_nic, event, t_start=T0 + 60)
    requests = [decode_infer(p) for _, p in plan]
    assert [r.seq for r in requests] == [4, 5, 6]  # interval 1 (0-based) x 3 messages + m + 1
    assert [r.t for r in requests] == [T0 + 60, T0 + 61, T0 + 62]
    ids = np.concatenate([r.ids for r in requests if r.ids is not None])
    np.testing.assert_array_equal(ids, event.indices[:6])
    np.testing.assert_array_equal(requests[0].x, event.dataset.take(event.indices[:2]))


async def count_infers(client: aiomqtt.Client, counts: dict[str, int]) -> None:
    async for message in client.messages:
        device = message.topic.value.split("/")[1]
        assert isinstance(message.payload, bytes)
        decode_infer(message.payload)
        counts[device] = counts.get(device, 0) + 1


async def test_paced_stream_sends_one_request_per_device_per_simulated_second(
    embedded_broker: Any, digits_nic: Scenario
) -> None:
    url: BrokerURL = embedded_broker.url
    ids = ["node-0000", "node-0001"]
    counts: dict[str, int] = {}
    async with aiomqtt.Client(**url.client_kwargs()) as watcher:
        await watcher.subscribe("vega/+/infer", qos=1)
        reader = asyncio.create_task(count_infers(watcher, counts))
        async with StreamPublisher(
            url, digits_nic, ids, cadence_s=3.0, speed=30.0, events=4, t0=T0, infer_rate=2.0
        ) as stream:
            stats = await stream.run()
        await wait_until(
            lambda: sum(counts.values()) >= stats.infer_sent,
            timeout_s=10,
            what=f"the watcher received the {stats.infer_sent} requests sent",
        )
        reader.cancel()
    assert stats.infer_sent == 2 * 9
    assert counts == {"node-0000": 9, "node-0001": 9}


async def test_closed_loop_predictions_are_scored_by_the_next_batch(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    ids = ["node-0000", "node-0001"]

    def settings(device: str) -> NodeSettings:
        return NodeSettings(device, tmp_path, sgd=SGDConfig(learning_rate=0.05))

    async with (
        FleetMonitor(url) as monitor,
        Fleet(ids, settings, default_bundle, url),
        StreamPublisher(
            url, digits_nic, ids, cadence_s=3.0, speed=None, events=4, t0=T0, infer_rate=2.0
        ) as stream,
    ):
        stats = await stream.run()
        await wait_for_telemetry(monitor, ids, seq=4)
        await wait_for_monitor(
            monitor,
            lambda: all(monitor.devices[d].predictions >= 9 for d in ids),
            timeout_s=10,
            what="a prediction for each of the 9 requests of each node",
        )
    assert stats.acked == 8 and stats.infer_sent == 18
    for device in ids:
        rec = monitor.devices[device]
        assert rec.predictions == 9
        last = rec.telemetry
        assert last is not None and last.seq == 4
        # every predicted sample was among the next batch's samples: all 3 x 6 are scored
        assert last.prequential_n == 18
        assert last.prequential_accuracy is not None and 0.0 <= last.prequential_accuracy <= 1.0
        assert last.inferences == 3  # the interval before the last event


def test_batches_name_their_samples_only_with_inference(digits_nic: Scenario) -> None:
    from dataset_stream.payloads import batch_payload

    event = digits_nic.events("node-0000")[0]
    plain = decode_batch(batch_payload(digits_nic, event, t0=T0, cadence_s=60))
    named = decode_batch(batch_payload(digits_nic, event, t0=T0, cadence_s=60, with_ids=True))
    assert plain.ids is None
    assert named.ids is not None and named.ids.tolist() == event.indices.tolist()
