"""A node's radio and cell: what it charges for telemetry, predictions and sleep, over real
brokers and a real engine (real SQLite, real onnxruntime); the default node charges nothing new."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import (
    Batch,
    Prediction,
    Status,
    Telemetry,
    encode_batch,
    encode_infer,
    validate_telemetry,
)
from dataset_stream.protocol.node_messages import PHASES
from device.energy import (
    DOWNLINK_J_PER_BYTE,
    inference_cost,
    load_chemistry,
    load_node_power,
    load_profile,
)
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.node import Node
from device.node.settings import NodeSettings, PowerSettings
from tests.support.times import T0

DEVICE = "node-0007"


def settings(state_dir: Path, **power: Any) -> NodeSettings:
    return NodeSettings(
        DEVICE, state_dir, sgd=SGDConfig(learning_rate=0.05), power=PowerSettings(**power)
    )


def run(
    bundle: ModelBundle, scenario: Scenario, state_dir: Path, k: int, **power: Any
) -> tuple[list[Telemetry], NodeEngine]:
    eng = NodeEngine(settings(state_dir, **power), bundle, FrozenStage.shared(bundle))
    out = []
    for i, event in enumerate(scenario.events(DEVICE)[:k], 1):
        out.append(eng.apply(Batch(event.x, event.y, seq=i, t=T0 + 60 * i, source="t")).telemetry)
    eng.close()
    return out, eng


def test_the_default_node_charges_nothing_new(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    default, eng = run(default_bundle, digits_nic, tmp_path / "default", 3)
    explicit, _ = run(
        default_bundle, digits_nic, tmp_path / "explicit", 3, radio="none", battery="ideal"
    )
    for a, b in zip(default, explicit, strict=True):
        assert set(a.energy_j) == set(PHASES)  # no radio key: today's message
        assert dict(a.energy_j) == dict(b.energy_j)
        assert a.battery == b.battery
    assert eng.profile == load_profile("vega")
    assert eng.radio_problem is None


def test_ble_costs_exactly_the_priced_telemetry_and_its_idle_draw(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    plain, _ = run(default_bundle, digits_nic, tmp_path / "plain", 4)
    ble, eng = run(default_bundle, digits_nic, tmp_path / "ble", 4, radio="ble")
    power = load_node_power("ble")
    vega = load_profile("vega")
    for i, (a, b) in enumerate(zip(plain, ble, strict=True)):
        validate_telemetry(b.to_dict())
        # priced at its real encoded size (within the swing of its own figures' digits)
        size = len(b.to_json())
        telemetry_j = b.energy_j["radio"]
        assert power.send_j(size - 16) <= telemetry_j <= power.send_j(size + 16)
        assert telemetry_j > power.send_j(387)  # more than the nominal compact message
        for stage in ("frozen", "adaptive", "memory"):
            assert b.energy_j[stage] == a.energy_j[stage]
        # the sleep since the last event pays the radio's idle draw too
        slept_s = a.energy_j["idle"] / vega.sleep_w
        assert b.energy_j["idle"] == pytest.approx(
            slept_s * (vega.sleep_w + power.radio.idle_w), rel=1e-12
        )
        extra = b.energy_j["total"] - a.energy_j["total"]
        assert extra == pytest.approx(telemetry_j + slept_s * power.radio.idle_w, rel=1e-9)
        if i == 0:  # nothing slept before the first event: exactly the priced telemetry
            assert extra == pytest.approx(telemetry_j, rel=1e-12, abs=1e-15)
    # the battery lost exactly what the telemetry reported, radio included
    spent = sum(t.energy_j["total"] for t in ble)
    assert ble[-1].battery.remaining_j == pytest.approx(vega.battery_j - spent, rel=1e-12)
    assert eng.radio_problem is None


def test_lipo_at_35_c_drains_faster_in_sleep_and_holds_its_usable_energy(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    ideal, _ = run(default_bundle, digits_nic, tmp_path / "ideal", 3)
    lipo, eng = run(
        default_bundle, digits_nic, tmp_path / "lipo", 3, battery="lipo", temperature_c=35.0
    )
    vega = load_profile("vega")
    usable_j = load_chemistry("lipo").usable_j(vega.capacity_mah)
    assert eng.battery.capacity_j == pytest.approx(usable_j, rel=1e-12)
    spent = sum(t.energy_j["total"] for t in lipo)
    assert lipo[-1].battery.remaining_j == pytest.approx(usable_j - spent, rel=1e-12)
    self_w = load_node_power("none", "lipo", 35.0).self_discharge_w(vega)
    assert self_w > 0
    assert eng.profile.sleep_w == pytest.approx(vega.sleep_w + self_w, rel=1e-12)
    for a, b in zip(ideal[1:], lipo[1:], strict=True):
        assert b.energy_j["idle"] > a.energy_j["idle"]
        slept_s = a.energy_j["idle"] / vega.sleep_w
        assert b.energy_j["idle"] == pytest.approx(slept_s * (vega.sleep_w + self_w), rel=1e-12)
        assert "radio" not in b.energy_j


def test_lorawan_sf12_at_one_event_a_minute_is_flagged(
    default_bundle: ModelBundle, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="device.node.engine"):
        eng = NodeEngine(
            settings(tmp_path, radio="lorawan-sf12"),
            default_bundle,
            FrozenStage.shared(default_bundle),
        )
    try:
        problem = eng.radio_problem
        assert problem is not None
        assert "maximum payload" in problem and "duty-cycle" in problem
        said = [r.getMessage() for r in caplog.records if "cannot carry" in r.getMessage()]
        assert said == [f"{DEVICE}: {problem}"]  # once, at start
        status = eng.status("idle")
        assert status.reason == problem
        assert eng.status("error", "disk full").reason == "disk full"  # another reason wins
    finally:
        eng.close()


async def test_a_node_over_a_broker_prices_its_messages_and_says_what_it_cannot_carry(
    any_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = any_broker.url
    power = load_node_power("lorawan-sf12")
    x_test, _ = digits_nic.eval_set
    async with (
        aiomqtt.Client(**url.client_kwargs()) as client,
        Node(settings(tmp_path, radio="lorawan-sf12"), default_bundle, url) as node,
    ):
        for kind in ("telemetry", "prediction", "status"):
            await client.subscribe(f"vega/{DEVICE}/{kind}", qos=1)
        await asyncio.wait_for(node.connected.wait(), 10)
        event = digits_nic.events(DEVICE)[0]
        await client.publish(
            f"vega/{DEVICE}/batch",
            encode_batch(event.x, event.y, seq=1, t=T0 + 60, source="t"),
            qos=1,
        )
        await client.publish(
            f"vega/{DEVICE}/infer", encode_infer(x_test[:2], seq=1, t=T0 + 90, source="t"), qos=1
        )
        telemetry: Telemetry | None = None
        prediction: Prediction | None = None
        statuses: list[Status] = []
        async with asyncio.timeout(30):
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                kind = message.topic.value.rsplit("/", 1)[-1]
                if kind == "telemetry":
                    telemetry = Telemetry.from_json(message.payload)
                    telemetry_bytes = len(message.payload)
                elif kind == "prediction":
                    prediction = Prediction.from_json(message.payload)
                    prediction_bytes = len(message.payload)
                else:
                    statuses.append(Status.from_json(message.payload))
                if telemetry is not None and prediction is not None:
                    break
    assert telemetry is not None and prediction is not None
    validate_telemetry(telemetry.to_dict())
    radio_j = telemetry.energy_j["radio"]  # priced at its real size, not the nominal 387 B
    assert power.send_j(telemetry_bytes - 16) <= radio_j <= power.send_j(telemetry_bytes + 16)
    cost = inference_cost(default_bundle.layers(), load_profile("vega"), 2)
    # priced at its real size (within the swing of its own figures' digits), not the nominal
    radio_j = prediction.energy_j["radio"]
    assert power.send_j(prediction_bytes - 16) <= radio_j <= power.send_j(prediction_bytes + 16)
    assert prediction.energy_j["total"] == pytest.approx(cost.energy_j["total"] + radio_j)
    online = [s for s in statuses if s.online]
    assert online and all(s.reason and "cannot carry" in s.reason for s in online)


def test_bad_power_settings_name_the_field() -> None:
    with pytest.raises(ValueError, match="temperature_c"):
        PowerSettings(temperature_c=float("nan"))
    with pytest.raises(ValueError, match="telemetry_bytes"):
        PowerSettings(telemetry_bytes=0)
    assert np.isfinite(PowerSettings().temperature_c)


async def test_a_pushed_head_costs_the_radios_downlink_not_the_stand_in(
    embedded_broker: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    from tests.node.test_desired import Answers, batch, desired, head_bytes, head_received, watch

    url: BrokerURL = embedded_broker.url
    power = load_node_power("ble")
    rng = np.random.default_rng(5)
    pushed = {
        k: (v + rng.normal(0, 0.01, v.shape)).astype(np.float32)
        for k, v in default_bundle.weights.items()
    }
    wire = head_bytes(pushed)
    sha = hashlib.sha256(wire).hexdigest()
    async with aiomqtt.Client(**url.client_kwargs()) as peer:
        await watch(peer, DEVICE)
        await peer.publish("vega/heads/v2/weights", wire, qos=1, retain=True)
        async with (
            Answers(peer) as answers,
            Node(settings(tmp_path, radio="ble"), default_bundle, url) as node,
        ):
            await asyncio.wait_for(node.connected.wait(), 10)
            engine = node.engine
            assert engine is not None
            await peer.publish(f"vega/{DEVICE}/batch", batch(digits_nic, DEVICE, 1), qos=1)
            await answers.until("telemetry", seq=1)
            before_j = engine.state.energy_totals.total_j
            on_v2 = desired(DEVICE, 1, head="v2", head_sha256=sha, learning=False)
            await peer.publish(f"vega/{DEVICE}/desired", on_v2, qos=1, retain=True)
            await head_received(engine, 1)
            await peer.publish(f"vega/{DEVICE}/batch", batch(digits_nic, DEVICE, 2), qos=1)
            second = await answers.until("telemetry", seq=2)
            await answers.until("reported", version=1)
            spent_j = engine.state.energy_totals.total_j - before_j
    assert second["energy_j"]["radio"] == power.send_j(387)  # a paused event still reports
    received_j = power.receive_j(len(wire))
    assert received_j > 0 and received_j != len(wire) * DOWNLINK_J_PER_BYTE
    assert spent_j == pytest.approx(second["energy_j"]["total"] + received_j, rel=1e-12)
