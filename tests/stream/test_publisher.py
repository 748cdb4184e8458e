"""The publisher against a real embedded broker, with real aiomqtt subscribers and fake devices."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import time
from collections import defaultdict

import aiomqtt
import numpy as np
import pytest

from broker import EmbeddedBroker
from broker.url import BrokerURL
from dataset_stream import PublishError, StreamPublisher, build_scenario
from dataset_stream.protocol import (
    EvalRef,
    decode_batch,
    decode_eval,
    parse_topic,
    validate_telemetry,
)
from dataset_stream.publisher import phase
from dataset_stream.scenarios import Scenario
from tests.support.messages import telemetry
from tests.support.times import T0


@pytest.fixture(scope="module")
def scenario() -> Scenario:
    return build_scenario("digits", "nic", seed=0)


async def drain(client: aiomqtt.Client, count: int) -> list[aiomqtt.Message]:
    """The next ``count`` messages of ``client`` (fails after 10 seconds)."""
    out: list[aiomqtt.Message] = []
    async with asyncio.timeout(10):
        async for message in client.messages:
            out.append(message)
            if len(out) == count:
                break
    return out


async def test_paced_stream_reaches_every_device_in_order(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    devices = ["node-0000", "node-0001", "node-0002"]
    progress: list[tuple[int, int]] = []
    async with aiomqtt.Client(**url.client_kwargs()) as sub:
        await sub.subscribe("vega/+/batch", qos=1)
        # cadence 60 s at 300x: one event every 0.2 s of wall time
        async with StreamPublisher(
            url,
            scenario,
            devices,
            speed=300,
            events=3,
            t0=T0,
            on_progress=lambda *a: progress.append(a),
        ) as publisher:
            started = time.monotonic()
            stats = await publisher.run()
            elapsed = time.monotonic() - started
        messages = await drain(sub, 9)
    assert 0.4 <= elapsed < 5.0
    assert (stats.sent, stats.total, stats.eval_sent, stats.devices) == (9, 9, 3, 3)
    assert progress[-1][0] == 9
    seqs: dict[str, list[int]] = defaultdict(list)
    for message in messages:
        device, kind = parse_topic("vega", message.topic.value)
        assert kind == "batch" and message.qos == 1
        assert isinstance(message.payload, bytes)
        batch = decode_batch(
            message.payload, sample_shape=(1, 32, 32), dtype="uint8", num_classes=10
        )
        assert batch.t == T0 + 60.0 * (batch.seq - 1)
        assert batch.source == "digits" and batch.meta["scenario"] == "nic"
        expected = scenario.events(device)[batch.seq - 1]
        np.testing.assert_array_equal(batch.y, expected.y)
        seqs[device].append(batch.seq)
    assert seqs == {d: [1, 2, 3] for d in devices}


async def test_eval_set_is_retained_per_device(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    devices = ["cam_a", "cam_b"]
    async with StreamPublisher(
        url, scenario, devices, speed=1e6, events=1, t0=T0, eval_by_reference=False
    ) as publisher:
        await publisher.run()
    assert publisher.evalsets_sent == 0
    # a device that connects later still finds its eval set
    async with aiomqtt.Client(**url.client_kwargs()) as late:
        await late.subscribe("vega/+/eval", qos=1)
        messages = await drain(late, 2)
    assert {parse_topic("vega", m.topic.value)[0] for m in messages} == set(devices)
    for message in messages:
        assert message.retain
        assert isinstance(message.payload, bytes)
        ev = decode_eval(message.payload, sample_shape=(1, 32, 32), num_classes=10)
        np.testing.assert_array_equal(ev.y, scenario.eval_set[1])


async def test_eval_set_is_retained_once_and_referenced_per_device(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    devices = ["cam_a", "cam_b"]
    for _ in range(2):  # a second run names the same set: still one
        async with StreamPublisher(url, scenario, devices, speed=1e6, events=1, t0=T0) as pub:
            await pub.run()
    async with aiomqtt.Client(**url.client_kwargs()) as late:
        await late.subscribe("vega/+/eval", qos=1)
        refs = {m.topic.value: m for m in await drain(late, 2)}
        await late.subscribe("vega/evalsets/#", qos=1)
        (shared,) = await drain(late, 1)
    assert (pub.eval_sent, pub.evalsets_sent) == (2, 1)
    assert set(refs) == {f"vega/{d}/eval" for d in devices}
    for message in refs.values():
        assert message.retain and isinstance(message.payload, bytes)
        ref = EvalRef.from_json(message.payload)
        assert ref.scenario == scenario.name and ref.source == scenario.source
    assert shared.retain and shared.topic.value == ref.topic("vega")
    assert isinstance(shared.payload, bytes) and ref.matches(shared.payload)
    ev = decode_eval(shared.payload, sample_shape=(1, 32, 32), num_classes=10)
    np.testing.assert_array_equal(ev.y, scenario.eval_set[1])


async def fake_device(
    url: BrokerURL, device: str, reject: int | None, ready: asyncio.Event
) -> None:
    """Answer each batch with telemetry (or an error for seq ``reject``) after a short delay."""
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        await client.subscribe(f"vega/{device}/batch", qos=1)
        status = json.dumps({"device": device, "state": "idle"})
        await client.publish(f"vega/{device}/status", status, qos=1, retain=True)
        ready.set()
        last = 0
        async for message in client.messages:
            assert isinstance(message.payload, bytes)
            batch = decode_batch(message.payload, last_seq=last)
            assert batch.seq == last + 1
            await asyncio.sleep(0.02)  # a device takes a while to learn (pacing, not a wait)
            last = batch.seq
            if batch.seq == reject:
                error = {"device": device, "seq": batch.seq, "code": "bad_label", "message": "x"}
                await client.publish(f"vega/{device}/error", json.dumps(error), qos=1)
            else:
                answer = telemetry(device, batch.seq)
                validate_telemetry(answer)
                await client.publish(f"vega/{device}/telemetry", answer, qos=1)


async def test_closed_loop_waits_for_each_devices_telemetry(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    devices = ["node-0000", "node-0001"]
    ready = {d: asyncio.Event() for d in devices}
    async with aiomqtt.Client(**url.client_kwargs()) as observer:
        await observer.subscribe("vega/+/+", qos=1)
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(fake_device(url, d, 3 if d == devices[1] else None, ready[d]))
                for d in devices
            ]
            async with asyncio.timeout(10):
                for event in ready.values():
                    await event.wait()
            async with StreamPublisher(
                url, scenario, devices, speed=None, events=5, t0=T0
            ) as publisher:
                stats = await publisher.run()
            for task in tasks:
                task.cancel()
        seen = await drain(observer, 2 + 2 + 10 + 10)
    assert (stats.sent, stats.acked, stats.rejected, stats.stalled) == (10, 9, 1, ())
    # as the broker saw it: each device's next batch only after its answer to the previous one
    flow: dict[str, list[tuple[str, int]]] = defaultdict(list)
    for message in seen:
        device, kind = parse_topic("vega", message.topic.value)
        assert isinstance(message.payload, bytes)
        if kind == "batch":
            flow[device].append(("batch", decode_batch(message.payload).seq))
        elif kind not in ("eval", "status"):
            flow[device].append(("answer", json.loads(message.payload)["seq"]))
    for device in devices:
        expected = [(kind, seq) for seq in range(1, 6) for kind in ("batch", "answer")]
        assert flow[device] == expected


async def test_closed_loop_gives_up_on_a_silent_device(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    devices = ["node-0000", "node-0001"]
    async with StreamPublisher(
        embedded_broker.url, scenario, devices, speed=None, events=5, ack_timeout_s=0.3
    ) as publisher:
        stats = await publisher.run()
    assert stats.sent == 0 and sorted(stats.stalled) == devices


async def test_closed_loop_waits_for_a_device_to_come_online(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    """A batch sent before a device's first connection would be lost: the stream waits."""
    url = embedded_broker.url
    async with StreamPublisher(url, scenario, ["node-0004"], speed=None, events=3) as publisher:
        run = asyncio.create_task(publisher.run())
        await asyncio.sleep(0.3)  # the subject: the stream is up and the device away this long
        assert publisher.sent == 0
        ready = asyncio.Event()
        device = asyncio.create_task(fake_device(url, "node-0004", None, ready))
        async with asyncio.timeout(10):
            stats = await run
        device.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await device
    assert (stats.sent, stats.acked, stats.stalled) == (3, 3, ())


async def test_unreachable_broker_is_a_clear_error(scenario: Scenario) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound but not listening: connection refused
        with pytest.raises(PublishError, match=f"127.0.0.1:{port}"):
            async with StreamPublisher(BrokerURL("127.0.0.1", port), scenario, ["a"], timeout_s=2):
                pytest.fail("connected to nothing")


async def test_a_staggered_stream_spreads_the_devices_over_each_cadence(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    devices = [f"node-{i:04d}" for i in range(6)]
    arrived: dict[tuple[str, int], float] = {}
    times: dict[tuple[str, int], float] = {}
    async with aiomqtt.Client(**url.client_kwargs()) as sub:
        await sub.subscribe("vega/+/batch", qos=1)
        # cadence 60 s at 30x: one event every 2 s of wall time
        async with StreamPublisher(
            url, scenario, devices, speed=30, events=2, t0=T0, stagger=True
        ) as publisher:
            run = asyncio.create_task(publisher.run())
            async with asyncio.timeout(20):
                async for message in sub.messages:
                    device, _ = parse_topic("vega", message.topic.value)
                    assert isinstance(message.payload, bytes)
                    batch = decode_batch(
                        message.payload, sample_shape=(1, 32, 32), dtype="uint8", num_classes=10
                    )
                    arrived[device, batch.seq] = time.monotonic()
                    times[device, batch.seq] = batch.t
                    if len(arrived) == 12:
                        break
            stats = await run
    assert stats.sent == 12
    offsets = {d: 60.0 * phase(d) for d in devices}
    assert len(set(offsets.values())) == 6 and all(0 <= o < 60 for o in offsets.values())
    assert max(offsets.values()) - min(offsets.values()) > 20  # spread, not bunched
    first = min(devices, key=offsets.__getitem__)
    for device in devices:
        for seq in (1, 2):  # t: the device's own scheduled time
            assert times[device, seq] == T0 + 60.0 * (seq - 1) + offsets[device]
        # sent at its own offset after the first device (wall clock at 30x), not all at once
        gap = arrived[device, 1] - arrived[first, 1]
        expected = (offsets[device] - offsets[first]) / 30
        assert expected - 0.2 <= gap <= expected + 0.4, (device, gap, expected)


def test_a_device_phase_is_its_own() -> None:
    ids = [f"node-{i:04d}" for i in range(2000)]
    phases = [phase(d) for d in ids]
    assert phases == [phase(d) for d in ids]  # the same in every stream
    assert all(0 <= p < 1 for p in phases)
    # contiguous id ranges (a fleet's shards) each get an even share of every minute
    for shard in (phases[:1000], phases[1000:]):
        quarters = np.histogram(shard, bins=4, range=(0, 1))[0]
        assert quarters.min() > 200, quarters


def test_arguments_are_checked(scenario: Scenario) -> None:
    url = BrokerURL("127.0.0.1", 9)
    for kwargs in (
        {"speed": 0},
        {"cadence_s": -1},
        {"events": 0},
        {"prefix": "a/#"},
        {"speed": None, "stagger": True},
        {"infer_rate": 1.0, "stagger": True},
    ):
        with pytest.raises(ValueError):
            StreamPublisher(url, scenario, ["a"], **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        StreamPublisher(url, scenario, [])
    with pytest.raises(ValueError):
        StreamPublisher(url, scenario, ["a", "a"])
    with pytest.raises(ValueError):
        StreamPublisher(url, scenario, ["a b"])
    assert StreamPublisher(url, scenario, ["a"], events=10**6).per_device == scenario.num_events


async def test_paced_stream_can_wait_for_every_answer(
    embedded_broker: EmbeddedBroker, scenario: Scenario
) -> None:
    url = embedded_broker.url
    ready = asyncio.Event()
    device = asyncio.create_task(fake_device(url, "node-0006", None, ready))
    async with asyncio.timeout(10):
        await ready.wait()
    async with StreamPublisher(
        url, scenario, ["node-0006"], speed=1e6, events=4, wait_for_answers=True
    ) as publisher:
        stats = await publisher.run()
    device.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await device
    assert (stats.sent, stats.acked, stats.stalled) == (4, 4, ())
