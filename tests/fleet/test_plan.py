"""Deciding a fleet's shards: every id once, every model resolved once, no password handed out."""

from __future__ import annotations

from pathlib import Path

import pytest

from broker.url import BrokerURL
from device.fleet.plan import shard_plans
from device.fleet.spec import DeviceClass, FleetSpec
from device.model.bundle import ModelBundle


def test_plans_cover_the_fleet_with_resolved_models_and_no_password(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    asked: list[Path | None] = []

    def load_model(path: Path | None) -> ModelBundle:
        asked.append(path)
        return default_bundle

    spec = FleetSpec((DeviceClass("a", 3), DeviceClass("b", 2, profile="stm32l4")), "dev-", 7)
    broker = BrokerURL("127.0.0.1", 1884, username="fleet", password="secret")
    plans = shard_plans(
        spec,
        2,
        load_model=load_model,
        broker=broker,
        state_dir=tmp_path,
        topic_prefix="t",
        seed=3,
        hold_s=5.0,
        give_up_s=9.0,
        threads=2,
        shared=True,
    )
    assert asked == [None, None]  # once per class, before any worker starts
    assert [p.worker for p in plans] == [0, 1]
    assert [d for p in plans for d in p.devices] == [
        ("dev-0007", "a"),
        ("dev-0008", "a"),
        ("dev-0009", "a"),
        ("dev-0010", "b"),
        ("dev-0011", "b"),
    ]
    for plan in plans:
        assert "secret" not in plan.to_json() and plan.broker == "mqtt://fleet@127.0.0.1:1884"
        assert all(c.model == default_bundle.path.resolve() for c in plan.classes)
        assert (plan.topic_prefix, plan.seed, plan.hold_s, plan.give_up_s) == ("t", 3, 5.0, 9.0)
        assert plan.threads == 2 and plan.shared


def test_a_bad_class_fails_before_any_worker(default_bundle: ModelBundle, tmp_path: Path) -> None:
    spec = FleetSpec((DeviceClass("a", 2, lr_bits=3),))
    with pytest.raises(ValueError, match="bits"):
        shard_plans(
            spec,
            2,
            load_model=lambda _: default_bundle,
            broker=BrokerURL("127.0.0.1", 1884),
            state_dir=tmp_path,
            topic_prefix="vega",
            seed=0,
            hold_s=30.0,
            give_up_s=180.0,
        )


def test_a_class_learns_at_its_own_rate_or_the_models(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    own = DeviceClass("a", 1, learning_rate=0.02).settings("n-1", tmp_path, default_bundle)
    assert own.sgd.learning_rate == 0.02
    assert own.learning_config()["learning_rate"] == 0.02  # recorded under its own name
    assert "lr" not in own.learning_config()  # lr_size and lr_bits are the latent replays
    models = DeviceClass("a", 1).settings("n-1", tmp_path, default_bundle)
    assert models.sgd.learning_rate == default_bundle.recommended_learning_rate


def test_each_worker_carries_its_devices_faults_as_up_would_schedule_them(
    default_bundle: ModelBundle, tmp_path: Path
) -> None:
    """A `fleet --spec` worker injects the same faults at the same times as `up --spec`: the
    plan carries each device's `[[fault]]` tables (with their indices) through its JSON."""
    text = """
seed = 5
[[class]]
name = "a"
count = 6
[[class]]
name = "b"
count = 4
[[fault]]
kind = "crash"
class = "a"
rate_per_hour = 2.0
[[fault]]
kind = "network"
fraction = 0.5
at_s = 0
loss = 0.1
duplicate = 0.05
"""
    path = tmp_path / "fleet.toml"
    path.write_text(text)
    spec = FleetSpec.load(path)
    plans = shard_plans(
        spec,
        3,
        load_model=lambda _: default_bundle,
        broker=BrokerURL("127.0.0.1", 1884),
        state_dir=tmp_path,
        topic_prefix="vega",
        seed=0,
        hold_s=5.0,
        give_up_s=9.0,
    )
    members = [(m.device_id, m.device_class.name) for m in spec.members()]
    want = spec.faults.by_device(members)
    got = {}
    for plan in plans:
        got |= type(plan).from_json(plan.to_json()).device_faults()
    assert set(got) == set(want) and len(got) >= 6  # every "a" device crashes; half are lossy
    for device, faults in want.items():
        assert got[device].specs == faults.specs
        horizon = 4 * 3600.0
        assert got[device].due(horizon) == faults.due(horizon)
