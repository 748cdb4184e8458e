"""One fetch of a shared eval set per process: the nodes of one event loop that get a reference
to the same set subscribe to its topic once between them (the first one), the others use the
set it fetched or wait for it; a fetch that fails or lags never leaves them without it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.payloads import eval_payload, eval_ref
from dataset_stream.protocol import encode_infer
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.model.bundle import ModelBundle
from device.node.dispatch import EVAL_WAIT_S, SHARED_FETCH_WAIT_S
from device.node.evalsets import SharedSets, shared_sets
from device.node.node import Node
from tests.node.test_evalref import Answers, batch, settings
from tests.support.times import T0

KINDS = ("telemetry", "status", "error", "prediction")


@contextlib.asynccontextmanager
async def fleet_answers(url: BrokerURL) -> AsyncIterator[tuple[aiomqtt.Client, Answers]]:
    """A peer that reads what every node publishes about itself."""
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        for kind in KINDS:
            await peer.subscribe(f"vega/+/{kind}", qos=1)
        answers = Answers(peer)
        reader = asyncio.create_task(answers.read())
        try:
            yield peer, answers
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


def measured_factory(answers: Answers, device: str) -> bool:
    """Whether ``device`` published its factory accuracy (a status with one, before any
    telemetry)."""
    return any(
        s.get("device") == device and s.get("accuracy") is not None for s in answers.of("status")
    )


async def learn_two(
    peer: aiomqtt.Client, answers: Answers, digits: Scenario, ids: list[str]
) -> list[dict[str, Any]]:
    for device in ids:
        for seq in (1, 2):
            await peer.publish(f"vega/{device}/batch", batch(digits, device, seq), qos=1)
    return [await answers.until("telemetry", device=d, seq=2) for d in ids]


@pytest.mark.parametrize("shared", [False, True], ids=["own-connection", "gateway"])
async def test_the_nodes_of_a_process_fetch_a_shared_set_once(
    mosquitto: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    shared: bool,
) -> None:
    # Mosquitto: the embedded broker sends a session's messages one at a time, each after the
    # PUBACK of the one before, so a batch held for the set delays the set by its PUBACK timeout
    url: BrokerURL = mosquitto.url
    ids = [f"node-01{i:02d}" for i in range(6)]
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    async with fleet_answers(url) as (peer, answers), contextlib.AsyncExitStack() as stack:
        await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
        for device in ids:
            await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        gateway = None
        if shared:
            gateway = await stack.enter_async_context(Gateway(url, "gw-share", "vega", ids))
        await stack.enter_async_context(
            Fleet(ids, lambda d: settings(d, tmp_path), default_bundle, url, gateway=gateway)
        )
        await learn_two(peer, answers, digits_nic, ids)
        assert shared_sets().subscriptions == Counter({ref.sha256: 1})
    for device in ids:  # each measured the factory model and its events on it, and kept it
        assert measured_factory(answers, device), device
        assert (tmp_path / f"{device}.eval.safetensors").read_bytes() == payload
    assert all(t["accuracy"] is not None for t in answers.of("telemetry"))
    assert len(answers.of("telemetry")) == 2 * len(ids)
    assert not answers.of("error")


async def test_a_fetch_that_does_not_come_lets_the_waiters_fetch_the_set_in_time(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = mosquitto.url
    ids = [f"node-02{i:02d}" for i in range(3)]
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    # a fetch in progress whose set never comes (its node is as good as deaf)
    withheld = shared_sets().claim(ref.sha256)
    loop = asyncio.get_running_loop()
    async with fleet_answers(url) as (peer, answers):
        await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
        for device in ids:
            await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Fleet(ids, lambda d: settings(d, tmp_path), default_bundle, url):
            started = loop.time()
            telemetry = await learn_two(peer, answers, digits_nic, ids)
            took_s = loop.time() - started
    assert took_s >= SHARED_FETCH_WAIT_S - 1.0  # they waited for that fetch first
    # the first to give up on that fetch fetched the set: the others then had it at once, or
    # gave up on that fetch too (at most one subscription each)
    assert 1 <= shared_sets().subscriptions[ref.sha256] <= len(ids)
    assert withheld.result() == payload  # the waiters' own fetch served it
    for device in ids:  # in time: the factory model and every event measured on the set
        assert measured_factory(answers, device), device
    assert all(t["accuracy"] is not None for t in answers.of("telemetry"))
    assert len(telemetry) == len(ids) and not answers.of("error")


async def test_a_mismatched_fetch_lets_each_waiter_check_the_set_itself(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    ids = [f"node-03{i:02d}" for i in range(4)]
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    tampered = bytearray(payload)
    tampered[-1] ^= 1  # still a valid set, not the referenced one
    loop = asyncio.get_running_loop()
    async with fleet_answers(url) as (peer, answers):
        await peer.publish(ref.topic("vega"), bytes(tampered), qos=1, retain=True)
        for device in ids:
            await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Fleet(ids, lambda d: settings(d, tmp_path), default_bundle, url):
            started = loop.time()
            for device in ids:  # each refused it itself, none used it
                await answers.until("error", device=device, code="eval_mismatch")
            refused_s = loop.time() - started
            first = await learn_two(peer, answers, digits_nic, ids)
            # the right set, published again: each node, subscribed, takes it
            await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
            for device in ids:
                await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 3), qos=1)
            third = [await answers.until("telemetry", device=d, seq=3) for d in ids]
    assert refused_s < EVAL_WAIT_S
    assert shared_sets().subscriptions == Counter({ref.sha256: len(ids)})
    assert all(t["accuracy"] is None for t in first)
    assert all(t["accuracy"] is not None for t in third)
    assert sorted(e["device"] for e in answers.of("error")) == ids
    for device in ids:
        assert (tmp_path / f"{device}.eval.safetensors").read_bytes() == payload


async def test_a_node_stopped_while_waiting_for_a_fetch_leaves_no_task(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = embedded_broker.url
    device = "node-0400"
    ref = eval_ref(digits_nic, eval_payload(digits_nic))
    fetch = shared_sets().claim(ref.sha256)  # another node's fetch, in progress
    async with fleet_answers(url) as (peer, answers):
        await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        async with Node(settings(device, tmp_path), default_bundle, url) as node:
            await asyncio.wait_for(node.connected.wait(), 10)
            # handled in turn after the retained reference: the node waits for the fetch now
            request = encode_infer(digits_nic.events(device)[0].x[:2], seq=1, t=T0, source="t")
            await peer.publish(f"vega/{device}/infer", request, qos=1)
            await answers.until("prediction", device=device)
            await peer.publish(f"vega/{device}/batch", batch(digits_nic, device, 1), qos=1)
        left = [t for t in asyncio.all_tasks() if device in t.get_name() and not t.done()]
    assert not left
    assert not fetch.done()  # the waiter's stop did not cancel another node's fetch
    assert shared_sets().subscriptions[ref.sha256] == 0
    assert not answers.of("telemetry")  # the batch was held for the set, then not handled


async def test_the_registry_keeps_the_last_sets_and_wakes_the_waiters() -> None:
    sets = SharedSets(kept=2)
    fetch = sets.claim("a")
    assert sets.claim("a") is fetch and sets.fetching("a") is fetch
    sets.fetched("a", b"set a")
    assert fetch.result() == b"set a" and sets.fetching("a") is None
    given_up = sets.claim("b")
    sets.abandon("b", given_up)
    assert given_up.result() is None and sets.fetching("b") is None
    assert sets.payload("b") is None
    sets.fetched("b", b"set b")
    sets.fetched("c", b"set c")  # the oldest goes
    assert [sets.payload(k) for k in "abc"] == [None, b"set b", b"set c"]
    assert shared_sets() is shared_sets() and shared_sets() is not sets


async def test_a_fetched_set_is_acknowledged_before_its_topic_is_left(
    embedded_broker: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # the embedded broker answers an unsubscription only after the PUBACK of the message it is
    # delivering: a node that left the set's topic before acknowledging the set stalled there
    # until the broker's PUBACK timeout, and the broker logged it
    url: BrokerURL = embedded_broker.url
    ids = ["node-0200", "node-0201"]
    payload = eval_payload(digits_nic)
    ref = eval_ref(digits_nic, payload)
    caplog.set_level(logging.WARNING, logger="amqtt")
    async with fleet_answers(url) as (peer, answers), contextlib.AsyncExitStack() as stack:
        await stack.enter_async_context(
            Fleet(ids, lambda d: settings(d, tmp_path), default_bundle, url)
        )
        for device in ids:  # the nodes online, then the set and references, as `up` sends them
            await answers.until("status", device=device)
        await peer.publish(ref.topic("vega"), payload, qos=1, retain=True)
        for device in ids:
            await peer.publish(f"vega/{device}/eval", ref.to_json(), qos=1, retain=True)
        # the set in use first, as a stream waits for it: batches held for a set stall too
        await answers.when(lambda: all(measured_factory(answers, d) for d in ids))
        await learn_two(peer, answers, digits_nic, ids)
    stalls = [r for r in caplog.records if "Timeout waiting for PUBACK" in r.getMessage()]
    assert not stalls, stalls[0].getMessage()
    assert not answers.of("error")
