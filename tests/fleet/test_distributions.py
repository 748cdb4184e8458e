"""Heterogeneous fleets: distribution tables in a spec, drawn per device from (seed, id) only,
checked with the class and the field named, and taken by each node as its hardware."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broker.url import parse_broker_url
from device.fleet.distributions import (
    Choice,
    DistributionError,
    LogNormal,
    Normal,
    Uniform,
    draw,
    parse_distribution,
    to_table,
)
from device.fleet.errors import FleetSpecError
from device.fleet.plan import shard_plans
from device.fleet.shard import ShardPlan
from device.fleet.spec import DeviceClass, FleetSpec
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine

SPEC = """
seed = 11

[[class]]
name = "vega"
count = 30
battery_j = {dist = "normal", mean = 39204, std = 4000, min = 20000, max = 50000}
initial_soc = {dist = "uniform", low = 0.5, high = 1.0}
drift_ppm = {dist = "lognormal", mu = 2.0, sigma = 0.5, max = 100}
speed_factor = {dist = "uniform", low = 0.8, high = 1.2}
events_per_hour = {dist = "choice", values = [30, 60, 120], weights = [1, 2, 1]}
lr_size = {dist = "choice", values = [500, 1000, 1500]}
availability.up = {dist = "weibull", shape = 0.8, scale_s = 3600}
availability.down = {dist = "exponential", mean_s = 600}

[[class]]
name = "stm32"
count = 10
profile = "stm32l4"
lr_size = 500
battery_j = 20000
offline_batches = "miss"
"""


def write(tmp_path: Path, text: str, name: str = "fleet.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def test_every_kind_parses_draws_within_its_bounds_and_round_trips() -> None:
    tables = [
        {"dist": "uniform", "low": 1.0, "high": 2.0},
        {"dist": "normal", "mean": 10.0, "std": 5.0, "min": 8.0, "max": 11.0},
        {"dist": "lognormal", "mu": 0.0, "sigma": 1.0, "min": 0.5, "max": 3.0},
        {"dist": "choice", "values": [1, 2, 3], "weights": [0, 1, 1]},
    ]
    kinds = (Uniform, Normal, LogNormal, Choice)
    for table, kind in zip(tables, kinds, strict=True):
        dist = parse_distribution(table)
        assert isinstance(dist, kind)
        assert parse_distribution(to_table(dist)) == dist
        low, high = dist.bounds
        values = [draw(dist, 3, f"node-{i:04d}", "x") for i in range(300)]
        assert all(low <= v <= high for v in values), table
        assert len(set(values)) > 1
    choice = parse_distribution(tables[3])
    assert {draw(choice, 3, f"node-{i:04d}", "x") for i in range(300)} == {2, 3}  # weight 0


@pytest.mark.parametrize(
    ("table", "named"),
    [
        ({"mean": 1}, "dist"),
        ({"dist": "gamma"}, "gamma"),
        ({"dist": "normal", "mean": 1}, "std"),
        ({"dist": "normal", "mean": 1, "std": 1, "mni": 0}, "mni"),
        ({"dist": "uniform", "low": 2, "high": 1}, "low <= high"),
        ({"dist": "normal", "mean": 1, "std": -1}, "std"),
        ({"dist": "normal", "mean": 1, "std": 1, "min": 3, "max": 2}, "min <= max"),
        ({"dist": "choice", "values": []}, "at least one"),
        ({"dist": "choice", "values": [1, 2], "weights": [1]}, "one weight per value"),
        ({"dist": "uniform", "low": "a", "high": 1}, "low"),
    ],
)
def test_a_bad_table_names_what_is_wrong(table: dict[str, object], named: str) -> None:
    with pytest.raises(DistributionError, match=named):
        parse_distribution(table)


@settings(max_examples=50, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    mean=st.floats(-1e6, 1e6),
    std=st.floats(0, 1e5),
    low=st.floats(-1e6, 1e6),
    width=st.floats(0, 1e6),
)
def test_draws_are_a_function_of_seed_device_and_setting_and_clipped(
    seed: int, mean: float, std: float, low: float, width: float
) -> None:
    dist = Normal(mean, std, low, low + width)
    ids = [f"node-{i:04d}" for i in range(20)]
    first = {d: draw(dist, seed, d, "battery_j") for d in ids}
    again = {d: draw(dist, seed, d, "battery_j") for d in reversed(ids)}
    assert first == again
    assert all(low <= v <= low + width for v in first.values())


def test_a_device_draws_the_same_values_whatever_its_order_shard_or_the_fleet_around_it(
    tmp_path: Path, default_bundle: ModelBundle
) -> None:
    spec = FleetSpec.load(write(tmp_path, SPEC))
    drawn = spec.drawn()
    assert FleetSpec.load(write(tmp_path, SPEC, "again.toml")).drawn() == drawn
    vega = spec.classes[0]
    for device, values in drawn.items():
        if device >= "node-0030":
            assert values["battery_j"] == 20000 and values["lr_size"] == 500  # constants
            continue
        assert vega.drawn(spec.seed, device) == values  # alone, not in a fleet
        assert 20000 <= values["battery_j"] <= 50000
        assert 0.5 <= values["initial_soc"] <= 1.0
        assert 0 <= values["drift_ppm"] <= 100
        assert 0.8 <= values["speed_factor"] <= 1.2
        assert values["events_per_hour"] in (30, 60, 120)
        assert values["lr_size"] in (500, 1000, 1500)
    assert len({v["battery_j"] for v in drawn.values()}) > 20  # drawn, not one value
    other_seed = FleetSpec.load(write(tmp_path, SPEC.replace("seed = 11", "seed = 12"), "o.toml"))
    assert other_seed.drawn() != drawn

    def plans(workers: int) -> list[ShardPlan]:
        return shard_plans(
            spec,
            workers,
            load_model=lambda _: default_bundle,
            broker=parse_broker_url("mqtt://127.0.0.1:1"),
            state_dir=tmp_path / "state",
            topic_prefix="vega",
            seed=0,
            hold_s=30.0,
            give_up_s=10.0,
        )

    by_workers = {}
    for workers in (1, 3):
        made = [ShardPlan.from_json(p.to_json()) for p in plans(workers)]  # what a worker reads
        assert made == [ShardPlan.from_json(p.to_json()) for p in plans(workers)]  # same twice
        bundles = {c.name: default_bundle for c in made[0].classes}
        node_settings = {d: s for p in made for d, s in p.node_settings(bundles).items()}
        by_workers[workers] = (
            {
                d: (s.hardware, s.replay.lr_size, s.events_per_hour)
                for d, s in node_settings.items()
            },
            {d: w for p in made for d, w in p.offline},
        )
    assert by_workers[1] == by_workers[3]
    hardware, windows = by_workers[1]
    for device, values in drawn.items():
        hw, lr_size, per_hour = hardware[device]
        assert (hw.battery_j, hw.initial_soc, hw.speed_factor, hw.drift_ppm) == (
            values["battery_j"],
            values["initial_soc"],
            values["speed_factor"],
            values["drift_ppm"],
        )
        assert (lr_size, per_hour) == (values["lr_size"], values["events_per_hour"])
    assert windows == {d: w for d, w in spec.offline_windows().items()}
    assert set(windows) and all(d < "node-0030" for d in windows)  # only the class with a model


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ('battery_j = {dist = "normal", mean = 39204, std = 20000}', "class 'x': battery_j: node-"),
        ('initial_soc = {dist = "uniform", low = 0.5, high = 1.5}', "class 'x': initial_soc"),
        ('lr_size = {dist = "normal", mean = 1}', "class 'x': lr_size: normal: std missing"),
        ('speed_factor = {dist = "beta", a = 1}', "class 'x': speed_factor: dist must be"),
        ('offline_batches = "drop"', "class 'x': offline_batches must be one of wait, miss"),
        ("availability = {up = 3}", "class 'x': availability must be a table {up"),
        (
            'availability = {up = {dist = "weibull", shape = 1}, down = {dist = "exponential", '
            "mean_s = 1}}",
            "class 'x': availability.up: weibull takes",
        ),
        ("drift_ppm = true", "class 'x': drift_ppm must be float"),
    ],
)
def test_a_bad_spec_names_the_class_and_the_field(tmp_path: Path, change: str, named: str) -> None:
    text = f'[[class]]\nname = "x"\ncount = 400\n{change}\n'
    with pytest.raises(FleetSpecError) as caught:
        FleetSpec.load(write(tmp_path, text))
    assert named in str(caught.value)
    assert str(tmp_path / "fleet.toml") in str(caught.value)


def test_scaled_keeps_the_classes_in_proportion(tmp_path: Path) -> None:
    spec = FleetSpec.load(write(tmp_path, SPEC))
    assert [c.count for c in spec.scaled(50).classes] == [38, 12]  # 37.5 + 12.5: largest first
    assert [c.count for c in spec.scaled(4).classes] == [3, 1]
    assert [c.count for c in spec.scaled(2).classes] == [1, 1]
    assert spec.scaled(50).size == 50
    with pytest.raises(FleetSpecError, match="1 devices cannot hold its 2 classes"):
        spec.scaled(1)


def test_a_node_takes_its_drawn_battery_charge_and_speed(
    tmp_path: Path, default_bundle: ModelBundle
) -> None:
    spec = FleetSpec.load(write(tmp_path, SPEC))
    vega = spec.classes[0]
    frozen = FrozenStage.shared(default_bundle)
    device = "node-0003"
    values = vega.drawn(spec.seed, device)
    mine = vega.for_device(spec.seed, device).settings(device, tmp_path, default_bundle)
    plain = DeviceClass(name="plain", count=1, lr_size=mine.replay.lr_size)
    base = plain.settings("node-0100", tmp_path, default_bundle)
    engine = NodeEngine(mine, default_bundle, frozen)
    reference = NodeEngine(base, default_bundle, frozen)
    try:
        assert math.isclose(engine.battery.capacity_j, values["battery_j"])
        charge = values["battery_j"] * values["initial_soc"]
        assert math.isclose(engine.battery.remaining_j, charge)
        speed = values["speed_factor"]
        assert math.isclose(engine.profile.freq_hz, reference.profile.freq_hz * speed)
        mine_s = engine.inference_charge(100).latency_s["total"]
        base_s = reference.inference_charge(100).latency_s["total"]
        assert math.isclose(mine_s * speed, base_s, rel_tol=1e-9)
    finally:
        engine.close()
        reference.close()
