"""``Up``: broker, monitor, fleet and stream in one process, summarised once every answer is in."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from dataset_stream import Pacing, Scenario
from dataset_stream.protocol import fleet_ids
from device.app import Up, UpConfig
from device.fleet.spec import DeviceClass
from device.model.bundle import ModelBundle


async def test_the_summary_holds_every_answer_of_the_run(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    ids = fleet_ids(2)
    node = DeviceClass("default", count=1)
    config = UpConfig(
        scenario=digits_nic,
        bundle=default_bundle,
        settings={d: node.settings(d, tmp_path, default_bundle) for d in ids},
        pacing=Pacing(cadence_s=4.0, speed=None, infer_per_s=1.0),
        events=3,
        recording=tmp_path / "run.sqlite",
        described={"devices": 2},
    )
    async with Up(config) as up:
        assert up.stream.per_device == 3
        summary = await up.run()
    assert summary.config == {"devices": 2}
    assert summary.stream.acked == 6 and summary.stream.infer_sent == 2 * 2 * 4
    assert [d.device for d in summary.devices] == ids
    for device in summary.devices:
        assert device.events == 3 and device.accuracy is not None
        # each answer published before the last telemetry was seen: none is missing
        assert device.predictions == 2 * 4
    with sqlite3.connect(tmp_path / "run.sqlite") as db:
        assert db.execute("SELECT count(*) FROM telemetry").fetchone() == (6,)


def test_a_config_is_checked_when_built(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    with pytest.raises(ValueError, match="at least one device"):
        UpConfig(digits_nic, default_bundle, {}, Pacing())
    settings = {"node-0000": DeviceClass("d", 1).settings("node-0000", tmp_path, default_bundle)}
    with pytest.raises(ValueError, match="events must be >= 1, not 0"):
        UpConfig(digits_nic, default_bundle, settings, Pacing(), events=0)


async def test_after_the_run_every_node_is_idle_in_the_summary_and_the_table(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """The last telemetry says ``learning`` (the event's state); the retained status the node
    publishes right after it says ``idle``: the run's end waits for it."""
    ids = fleet_ids(4)
    node = DeviceClass("default", count=1)
    config = UpConfig(
        scenario=digits_nic,
        bundle=default_bundle,
        settings={d: node.settings(d, tmp_path, default_bundle) for d in ids},
        pacing=Pacing(speed=None),  # closed loop: the last status follows the last answer closely
        events=2,
    )
    async with Up(config) as up:
        summary = await up.run()
        states = {d: up.monitor.record(d).state for d in ids}
    assert states == dict.fromkeys(ids, "idle")
    assert [d.state for d in summary.devices] == ["idle"] * 4
