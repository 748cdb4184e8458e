"""The learning engine without MQTT: learning, forgetting, persistence, energy bookkeeping."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dataset_stream import Scenario
from dataset_stream.protocol import Batch, EvalSet
from device.energy import CostConfig, event_cost, load_profile
from device.learning.nn import SGDConfig
from device.learning.replay.policy import ar1_writes
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from device.node.settings import NodeSettings, ReplaySettings
from tests.support.times import T0

LR = 0.05


def engine(
    bundle: ModelBundle, state_dir: Path, *, lr_size: int = 1500, bits: int = 8, dev: str = "n0"
) -> NodeEngine:
    settings = NodeSettings(
        dev, state_dir, replay=ReplaySettings(lr_size, bits), sgd=SGDConfig(learning_rate=LR)
    )
    return NodeEngine(settings, bundle, FrozenStage.shared(bundle))


def run(eng: NodeEngine, scenario: Scenario, k: int, start: int = 0) -> list[dict[str, object]]:
    out = []
    for i, event in enumerate(scenario.events("node-0000", True)[start : start + k], start + 1):
        batch = Batch(event.x, event.y, seq=i, t=T0 + 60 * i, source="digits")
        out.append(eng.apply(batch).telemetry.to_dict())
    return out


def factory_accuracy(eng: NodeEngine, scenario: Scenario) -> float:
    evaluation = eng.evaluate()
    assert evaluation is not None
    classes = {int(c) for c in np.unique(scenario.factory[1])}
    return float(np.mean([v for c, v in evaluation.per_class.items() if c in classes]))


def test_replays_prevent_forgetting_of_early_classes(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    ex, ey = digits_nic.eval_set
    results = {}
    for size in (1500, 0):
        eng = engine(default_bundle, tmp_path / str(size), lr_size=size)
        eng.set_eval(EvalSet(ex, ey, "digits"))
        telemetry = run(eng, digits_nic, 30)
        results[size] = (
            telemetry[0]["accuracy"],
            telemetry[-1]["accuracy"],
            factory_accuracy(eng, digits_nic),
        )
        eng.close()
    first, last, factory = results[1500]
    assert last > first + 0.2  # it learns the classes it meets
    # forgetting, measured: without replays the factory classes are lost
    assert factory > results[0][2] + 0.2
    assert last > results[0][1] + 0.1


def test_restart_resumes_the_same_weights_memory_and_battery(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    eng = engine(default_bundle, tmp_path)
    run(eng, digits_nic, 3)
    params = {k: v.copy() for k, v in eng.head.params().items()}
    memory = eng.memory.contents()
    battery = eng.battery.to_dict()
    eng.close()

    again = engine(default_bundle, tmp_path)
    assert again.last_seq == 3 and again.state.events_applied == 3
    for key, value in again.head.params().items():
        np.testing.assert_array_equal(value, params[key])
    np.testing.assert_array_equal(again.memory.contents()[0], memory[0])
    np.testing.assert_array_equal(again.memory.contents()[1], memory[1])
    assert again.battery.to_dict() == battery
    run(again, digits_nic, 1, start=3)
    assert again.last_seq == 4 and again.state.events_applied == 4
    again.close()


def test_telemetry_energy_equals_the_analytical_model(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    eng = engine(default_bundle, tmp_path, lr_size=500, bits=6)
    telemetry = run(eng, digits_nic, 3)
    events_before_third = eng.memory.updates - 1  # AR1* events, the factory batch included
    eng.close()
    third = telemetry[2]
    n_new = third["samples"]
    before = telemetry[1]["replay"]  # the memory as the third event found it
    assert isinstance(n_new, int) and isinstance(before, dict)
    config = CostConfig(lr_size=500, lr_bits=6, events_per_hour=60.0)
    n_replay_before = before["size"]
    written = ar1_writes(500, n_replay_before, events_before_third, n_new)
    expected = event_cost(
        default_bundle.layers(),
        load_profile("vega"),
        config,
        n_new=n_new,
        n_replay=n_replay_before,
        n_written=written,
    )
    energy = third["energy_j"]
    assert isinstance(energy, dict)
    for part in ("frozen", "adaptive", "memory"):
        assert energy[part] == expected.energy_j[part]
    assert energy["total"] == sum(energy[p] for p in ("frozen", "adaptive", "memory", "idle"))
    # the battery lost exactly what the events were charged
    spent = sum(t["energy_j"]["total"] for t in telemetry)  # type: ignore[index]
    battery = telemetry[-1]["battery"]
    assert isinstance(battery, dict)
    capacity = load_profile("vega").battery_j
    assert abs((capacity - battery["remaining_j"]) - spent) < 1e-9 * capacity
    assert 0 < battery["soc"] < 1
    assert 0 < telemetry[-1]["lifetime_h"] < float("inf")  # type: ignore[operator]


def test_a_depleted_node_stops_learning_and_reports_zero_lifetime(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    vega = (Path(__file__).parents[2] / "device/energy/profiles/vega.toml").read_text()
    tiny = tmp_path / "tiny.toml"  # a battery for about two events of the default model
    tiny.write_text(vega.replace("capacity_mah = 3300", "capacity_mah = 0.012"))
    settings = NodeSettings(
        "n0",
        tmp_path,
        replay=ReplaySettings(100, 8),
        sgd=SGDConfig(learning_rate=LR),
        profile=str(tiny),
    )
    eng = NodeEngine(settings, default_bundle, FrozenStage.shared(default_bundle))
    telemetry = run(eng, digits_nic, 6)
    states = [t["state"] for t in telemetry]
    assert states[0] == "learning" and states[-1] == "depleted"
    assert states == sorted(states, key=lambda s: s == "depleted")  # never learns again
    params = {k: v.copy() for k, v in eng.head.params().items()}
    spent = sum(t["energy_j"]["total"] for t in telemetry)  # type: ignore[index]
    assert abs(spent - load_profile(str(tiny)).battery_j) < 1e-12  # all of it, accounted for
    last = telemetry[-1]
    assert last["lifetime_h"] == 0 and last["battery"]["soc"] == 0  # type: ignore[index]
    assert last["samples"] == 0 and eng.status("idle").state == "depleted"
    run(eng, digits_nic, 1, start=6)  # still answers, changes no weight
    for key, value in eng.head.params().items():
        np.testing.assert_array_equal(value, params[key])
    assert eng.last_seq == 7
    eng.close()
