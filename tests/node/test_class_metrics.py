"""Long-horizon metrics on a real engine: the factory point, forgetting, recurrence, restarts,
and telemetry that stays bounded whatever the model's number of classes."""

from __future__ import annotations

import contextlib
import shutil
import tomllib
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import (
    PER_CLASS_CAP,
    Batch,
    EvalSet,
    Status,
    Telemetry,
    encode_eval,
)
from device.fleet.fleet import Fleet
from device.fleet.gateway import Gateway
from device.learning.learner import evaluate
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings
from device.observe.monitor import FleetMonitor
from tests.support.times import T0
from tests.support.wait import wait_for_monitor


def engine(bundle: ModelBundle, state_dir: Path) -> NodeEngine:
    return NodeEngine(NodeSettings("n0", state_dir), bundle, FrozenStage.shared(bundle))


def learn(eng: NodeEngine, x: np.ndarray, y: np.ndarray) -> Telemetry:
    seq = (eng.last_seq or 0) + 1
    return eng.apply(Batch(x, y, seq=seq, t=T0 + 60 * seq, source="t")).telemetry


def test_the_factory_point_is_the_factory_models_accuracy_and_costs_nothing(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    ex, ey = digits_nic.eval_set
    eng = engine(default_bundle, tmp_path)
    assert eng.measure_factory() is None  # no eval set yet
    eng.set_eval(EvalSet(ex, ey, "digits"))
    battery = eng.battery.to_dict()
    factory = eng.measure_factory()
    # the factory model, measured on its own: the bundle's head on the eval set's latents
    expected = evaluate(default_bundle.build_head(), FrozenStage.shared(default_bundle).run(ex), ey)
    assert factory is not None and factory.accuracy == expected.accuracy
    assert factory.per_class == expected.per_class
    # an evaluation is the emulator's own measurement: no energy, no event, no seq
    assert eng.battery.to_dict() == battery
    assert eng.state.events_applied == 0 and eng.last_seq is None and eng.store.events() == []
    factory_classes = set(default_bundle.meta["factory_classes"])
    for label in factory_classes:
        row = eng.classes.rows[label]
        assert row.trained_accuracy == row.accuracy == expected.per_class[label]
        assert row.first_seen_event == row.last_trained_event == 0
    assert eng.measure_factory() == factory  # measured again before the first event: the same
    event = digits_nic.events("n0", True)[0]
    first = learn(eng, event.x, event.y)
    assert eng.measure_factory() is None  # an event was learned: the head is not the factory's
    # the first event's forgetting is measured against the factory model's accuracy
    assert first.classes is not None and first.accuracy_by_class is not None
    by_class = first.classes.forgetting_by_class
    assert by_class is not None
    for label in factory_classes:
        assert by_class[label] == pytest.approx(
            expected.per_class[label] - first.accuracy_by_class[label]
        )
    eng.close()


def test_a_class_left_behind_is_forgotten_and_recurs(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    ex, ey = digits_nic.eval_set
    eng = engine(default_bundle, tmp_path)
    eng.set_eval(EvalSet(ex, ey, "digits"))
    eng.measure_factory()
    events = digits_nic.events("n0", True)
    factory = set(default_bundle.meta["factory_classes"])
    c = next(int(e.y[0]) for e in events if int(e.y[0]) not in factory)
    with_c = [e for e in events if c in e.y]
    without_c = [e for e in events if c not in e.y]
    for e in with_c[:2]:
        learned = learn(eng, e.x, e.y)
    assert learned.accuracy_by_class is not None and learned.classes is not None
    best = learned.accuracy_by_class[c]
    assert best > 0.5  # learned
    assert learned.classes.events_since_class == {**learned.classes.events_since_class, c: 0}
    forgetting = []
    for k, e in enumerate(without_c[:15], 1):
        tel = learn(eng, e.x, e.y)
        assert tel.classes is not None and tel.accuracy_by_class is not None
        by_class = tel.classes.forgetting_by_class
        assert by_class is not None and tel.classes.events_since_class is not None
        assert tel.classes.events_since_class[c] == k
        row = eng.classes.rows[c]
        assert row.best_earlier is not None
        assert by_class[c] == pytest.approx(row.best_earlier - tel.accuracy_by_class[c])
        forgetting.append(by_class[c])
        assert tel.classes.forgetting is not None
        assert tel.classes.forgetting == pytest.approx(np.mean(list(by_class.values())))
    # its accuracy dropped while other classes were learned: its forgetting rose with it
    assert tel.accuracy_by_class[c] < best - 0.3
    assert forgetting[-1] > 0.3 and forgetting[-1] >= best - tel.accuracy_by_class[c] - 1e-12
    transfer = tel.classes.backward_transfer_by_class
    assert transfer is not None and transfer[c] == pytest.approx(tel.accuracy_by_class[c] - best)
    assert eng.classes.rows[c].recurrences == 0
    back = learn(eng, with_c[2].x, with_c[2].y)  # it recurs
    assert back.classes is not None and back.classes.events_since_class is not None
    assert back.classes.events_since_class[c] == 0
    assert back.classes.backward_transfer_by_class is not None
    assert c not in back.classes.backward_transfer_by_class  # just trained: nothing to compare
    row = eng.classes.rows[c]
    assert row.recurrences == 1 and row.trained_events == 3
    assert row.last_trained_t == T0 + 60 * eng.last_seq  # type: ignore[operator]
    eng.close()


def test_the_metrics_survive_a_restart(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    ex, ey = digits_nic.eval_set
    events = digits_nic.events("n0", True)
    eng = engine(default_bundle, tmp_path)
    eng.set_eval(EvalSet(ex, ey, "digits"))
    eng.measure_factory()
    for e in events[:5]:
        before_restart = learn(eng, e.x, e.y)
    book = eng.classes
    eng.close()

    again = engine(default_bundle, tmp_path)
    assert again.classes == book
    # and a node that never stopped agrees with it on the next event
    unbroken = engine(default_bundle, tmp_path / "unbroken")
    unbroken.set_eval(EvalSet(ex, ey, "digits"))
    unbroken.measure_factory()
    for e in events[:5]:
        learn(unbroken, e.x, e.y)
    again.set_eval(EvalSet(ex, ey, "digits"))
    after = learn(again, events[5].x, events[5].y)
    expected = learn(unbroken, events[5].x, events[5].y)
    assert before_restart.classes is not None
    assert after.classes == expected.classes and after.classes is not None
    assert after.classes.events_since_class is not None
    assert again.classes == unbroken.classes
    again.close()
    unbroken.close()


def wide_bundle(bundle: ModelBundle, out: Path, num_classes: int) -> ModelBundle:
    """``bundle`` with a last layer of ``num_classes`` outputs (random weights): a model with
    many classes, to check what a node sends for it."""
    shutil.copytree(bundle.path, out)
    manifest = (out / "model.toml").read_text()
    head = tomllib.loads(manifest)["adaptive"]["layers"][-1]
    old = f"out_features = {bundle.num_classes}"
    assert head["op"] == "linear" and old in manifest
    manifest = manifest.replace(old, f"out_features = {num_classes}")
    manifest = manifest.replace(
        f"[classes]\ncount = {bundle.num_classes}", f"[classes]\ncount = {num_classes}"
    )
    (out / "model.toml").write_text(manifest)
    weights = load_file(str(out / "adaptive.safetensors"))
    name = head["name"]
    rng = np.random.default_rng(0)
    features = weights[f"{name}.weight"].shape[1]
    weights[f"{name}.weight"] = rng.normal(0, 0.05, (num_classes, features)).astype(np.float32)
    weights[f"{name}.bias"] = np.zeros(num_classes, np.float32)
    save_file(weights, str(out / "adaptive.safetensors"))
    return ModelBundle.load(out, warn_old_keys=False)


def test_telemetry_of_a_model_with_1000_classes_stays_bounded(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    wide = wide_bundle(default_bundle, tmp_path / "wide", 1000)
    ex, _ = digits_nic.eval_set
    rng = np.random.default_rng(1)
    labels = np.arange(1000, dtype=np.int64)  # every class in the eval set, and learned
    x = ex[rng.integers(0, len(ex), 1000)]
    eng = engine(wide, tmp_path / "state")
    eng.set_eval(EvalSet(x, labels, "t"))
    factory = eng.measure_factory()
    assert factory is not None and eng.factory_accuracy_by_class(factory) is None
    sizes = []
    for k in range(3):
        chunk = slice(300 * k, 300 * k + 300)
        tel = learn(eng, x[chunk], labels[chunk])
        assert tel.accuracy_by_class is None
        metrics = tel.classes
        assert metrics is not None and metrics.classes_seen == 300 * (k + 1)  # factory's too
        assert metrics.forgetting is not None
        assert (metrics.backward_transfer is not None) == (k > 0)  # classes trained before
        for name in (
            "forgetting_by_class",
            "backward_transfer_by_class",
            "events_since_class",
            "seconds_since_class",
        ):
            assert getattr(metrics, name) is None
        sizes.append(len(tel.to_json()))
        Telemetry.from_json(tel.to_json())  # valid against the schema
    assert max(sizes) < 1500  # aggregates only: the size of a telemetry without them, roughly
    assert len(eng.store.class_rows()) == 1000  # the node itself keeps every class
    eng.close()


def test_the_cap_is_the_documented_one() -> None:
    assert PER_CLASS_CAP == 64
    text = (Path(__file__).resolve().parents[2] / "docs" / "protocol.md").read_text()
    assert "64 classes" in text


@pytest.mark.parametrize("connection", ["node", "shared"])
async def test_a_node_publishes_its_factory_accuracy_as_event_0(
    connection: str,
    embedded_broker: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
) -> None:
    url: BrokerURL = embedded_broker.url
    ids = ["node-0000", "node-0001"]
    ex, ey = digits_nic.eval_set
    expected = evaluate(default_bundle.build_head(), FrozenStage.shared(default_bundle).run(ex), ey)
    statuses: list[tuple[str, Status]] = []

    def seen(device: str, message: object, received: float) -> None:
        if isinstance(message, Status):
            statuses.append((device, message))

    def factory_points() -> dict[str, Status]:
        return {d: s for d, s in statuses if s.events == 0 and s.accuracy is not None}

    def settings(device: str) -> NodeSettings:
        return NodeSettings(device, tmp_path)

    async with contextlib.AsyncExitStack() as stack:
        monitor = await stack.enter_async_context(FleetMonitor(url, on_message=seen))
        gateway = None
        if connection == "shared":
            gateway = await stack.enter_async_context(Gateway(url, "gw-test", "vega", ids))
        await stack.enter_async_context(Fleet(ids, settings, default_bundle, url, gateway=gateway))
        async with aiomqtt.Client(**url.client_kwargs()) as producer:
            for device in ids:  # the stream's eval set, once the nodes are up
                payload = encode_eval(ex, ey, source="digits")
                await producer.publish(f"vega/{device}/eval", payload, qos=1, retain=True)
        await wait_for_monitor(
            monitor, lambda: len(factory_points()) == 2, 30, what="both factory points"
        )
        points = factory_points()
        for device in ids:
            status = points[device]
            assert status.accuracy == expected.accuracy and status.last_seq is None
            assert status.accuracy_by_class == expected.per_class
            assert status.battery is not None and status.battery.soc == 1.0  # not charged
            record = monitor.devices[device]
            assert record.accuracy == expected.accuracy and record.events == 0
        assert monitor.accepted["telemetry"] == 0  # not an event: no telemetry, no seq
