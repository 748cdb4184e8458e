"""``vega-emu rollout`` against devices played by hand over a real broker: a head whose stage
loses accuracy halts at the first stage and is rolled back; a good one goes to 100 %. The
devices answer desired states with reported states and send telemetry whose accuracy depends on
the head they run (what a real node does is tested with real nodes elsewhere)."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker.url import BrokerURL
from dataset_stream.protocol import (
    ErrorMessage,
    ReportedState,
    RolloutState,
    head_topic,
    read_desired,
    topic,
)
from device.aio import cancel_and_wait
from device.app.rollout import (
    FleetHistory,
    Soak,
    parse_duration,
    parse_stages,
    stage_devices,
)
from tests.support.cli import Command
from tests.support.messages import report

SETTINGS: dict[str, Any] = {
    "lr_bits": 8,
    "lr_size": 1500,
    "learning_rate": 0.01,
    "epochs": 4,
    "mb_size": 128,
    "learning": True,
    "inference": True,
    "head": "own",
}


def test_durations_and_stages() -> None:
    assert parse_duration("30m") == 1800 and parse_duration("90s") == 90
    assert parse_duration("2h") == 7200 and parse_duration("15") == 15
    for bad in ("", "3d", "-1m", "m"):
        with pytest.raises(ValueError, match="not a duration"):
            parse_duration(bad)
    assert parse_stages("5,25,100") == (5, 25, 100)
    for bad in ("5,5", "0,100", "50,20", "x", "101"):
        with pytest.raises(ValueError, match="stages"):
            parse_stages(bad)


def test_stages_are_seeded_cumulative_and_never_empty() -> None:
    fleet = [f"node-{i:04d}" for i in range(20)]
    stages = stage_devices(fleet, (5, 25, 100), seed=0)
    assert [len(s) for s in stages] == [1, 5, 20]
    assert stages[1][:1] == stages[0] and set(stages[2]) == set(fleet)
    assert stage_devices(list(reversed(fleet)), (5, 25, 100), seed=0) == stages
    assert stage_devices(fleet, (5, 25, 100), seed=1) != stages
    assert [len(s) for s in stage_devices(fleet[:4], (5, 50, 100), seed=0)] == [1, 2, 4]


def test_the_soak_compares_the_stage_with_the_rest_over_the_same_time() -> None:
    history = FleetHistory()
    for t in (60.0, 120.0, 180.0):
        history.add("a", _telemetry("a", t, 0.2))
        history.add("b", _telemetry("b", t, 0.9))
        history.add("c", _telemetry("c", t, 0.8))
    soak = Soak(history, frozenset({"a"}), frozenset({"b", "c"}), {"a": 60.0}, 120.0, 0)
    values = soak.values()
    assert values["accuracy"] == pytest.approx(0.2)
    assert values["accuracy_drop"] == pytest.approx(0.85 - 0.2)
    assert values["errors"] == 0 and soak.done and soak.events == 2
    # the whole fleet in the stage: compared with its own accuracy before it moved
    alone = Soak(history, frozenset({"a"}), frozenset(), {"a": 60.0}, 120.0, 0, baseline=0.9)
    assert alone.values()["accuracy_drop"] == pytest.approx(0.7)
    history.add("a", ErrorMessage("a", "internal", "boom", seq=4))
    history.add("a", ErrorMessage("a", "duplicate", "again", seq=3))  # not a fault of the head
    assert soak.values()["error_count"] == 1 and soak.values()["errors"] == 0.5


def _telemetry(device: str, t: float, accuracy: float) -> Any:
    from dataset_stream.protocol import Telemetry

    return Telemetry.from_json(report(device, 1, t=t, accuracy=accuracy))


@dataclass
class HandFleet:
    """Devices played by hand: each answers its desired state at its next event, and learns
    one event every ``period_s`` of wall time, 60 s of simulated time apart."""

    url: BrokerURL
    devices: list[str]
    bad_heads: set[str]
    period_s: float = 0.02
    heads: dict[str, str] = field(default_factory=dict)
    versions: dict[str, int] = field(default_factory=dict)
    pending: dict[str, Any] = field(default_factory=dict)
    reported: dict[str, ReportedState] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        async with aiomqtt.Client(**self.url.client_kwargs(), identifier="hand-fleet") as c:
            await c.subscribe("vega/+/desired", qos=1)
            tasks = [asyncio.create_task(self._listen(c)), asyncio.create_task(self._learn(c))]
            try:
                yield
            finally:
                # cancel_and_wait, not cancel + gather: on Python 3.11 a cancel that lands while
                # a publish's acknowledgement completes is swallowed (CPython gh-86296), and the
                # learning loop went on publishing for good (a CI run hung here for 10 minutes)
                for task in tasks:
                    await cancel_and_wait(task)

    async def _listen(self, c: aiomqtt.Client) -> None:
        async for message in c.messages:
            state = read_desired("vega", message.topic.value, message.payload)
            self.pending[state.device] = state

    async def _learn(self, c: aiomqtt.Client) -> None:
        seq = 0
        while True:
            seq += 1
            t = 1000.0 + 60.0 * seq
            for device in self.devices:
                state = self.pending.pop(device, None)
                if state is not None:
                    self.heads[device] = state.settings.get("head", "own")
                    settings = {**SETTINGS, **state.settings}
                    settings.pop("head_sha256", None)
                    rep = ReportedState(device, state.version, settings, seq=seq - 1, t=t - 60)
                    self.reported[device] = rep
                    await c.publish(topic("vega", device, "reported"), rep.to_json(), 1, True)
                bad = self.heads.get(device, "own") in self.bad_heads
                payload = report(device, seq, t=t, accuracy=0.1 if bad else 0.9)
                await c.publish(topic("vega", device, "telemetry"), payload, qos=1)
            await asyncio.sleep(self.period_s)


async def rollout_states(url: BrokerURL, name: str) -> RolloutState:
    found: RolloutState | None = None
    async with aiomqtt.Client(**url.client_kwargs(), identifier="rollout-read") as c:
        await c.subscribe(f"vega/rollout/{name}/state", qos=1)
        async with asyncio.timeout(5):
            async for message in c.messages:
                assert isinstance(message.payload, bytes)
                found = RolloutState.from_json(message.payload)
                break
    assert found is not None
    return found


@pytest.mark.parametrize("broken", [True, False])
async def test_a_broken_head_halts_at_the_first_stage_and_rolls_back(
    mosquitto: Any, tmp_path: Path, broken: bool
) -> None:
    url = mosquitto.url
    head = tmp_path / "candidate.safetensors"
    head.write_bytes(b"not really weights, the hand fleet does not read them")
    fleet = HandFleet(url, [f"node-{i:04d}" for i in range(20)], {"v2"} if broken else set())
    args = ["rollout", "--head", str(head), "--name", "v2", "--devices", "20"]
    args += ["--stages", "5,25,100", "--soak", "10m", "--broker", str(url)]
    async with fleet.running(), Command(args) as cmd:
        await cmd.ended_within(120)
    if broken:
        assert cmd.returncode == 1, cmd.stderr
        assert "halted: stage 5 %: accuracy_drop > 0.05 (accuracy_drop = 0.8)" in cmd.stderr
        assert "rollback: 1 converged, 0 refused, 0 did not answer" in cmd.stderr
        moved = [d for d, h in fleet.heads.items() if h == "v2" or d in fleet.reported]
        assert len(moved) == 1 and fleet.heads[moved[0]] == "own"
        assert fleet.reported[moved[0]].settings["head"] == "own"
        state = await rollout_states(url, "v2")
        assert (state.state, state.stage, list(state.devices)) == ("rolled_back", 0, moved)
        assert "accuracy_drop" in state.reason
    else:
        assert cmd.returncode == 0, cmd.stderr
        assert "rollout v2 done: 20 device(s) run head v2" in cmd.stderr
        assert set(fleet.heads.values()) == {"v2"} and len(fleet.heads) == 20
        state = await rollout_states(url, "v2")
        assert (state.state, state.stage, len(state.devices)) == ("done", 2, 20)
    assert json.dumps(cmd.lines).count("Traceback") == 0


async def test_bad_options_are_refused_before_anything_is_published(
    embedded_broker: Any, tmp_path: Path
) -> None:
    head = tmp_path / "h.safetensors"
    head.write_bytes(b"x")
    url = str(embedded_broker.url)
    cases = [
        (["--halt-if", "loss > 1"], "unknown metric 'loss'"),
        (["--halt-if", "accuracy_drop >"], "expected a number"),
        (["--stages", "50,20"], "each larger than the one before"),
        (["--soak", "3 days"], "not a duration"),
    ]
    for extra, says in cases:
        async with Command(
            ["rollout", "--head", str(head), "--devices", "2", "--broker", url, *extra]
        ) as cmd:
            await cmd.ended_within(60)
        assert cmd.returncode == 2 and says in cmd.stderr, cmd.stderr


async def test_a_bundle_of_another_frozen_stage_is_refused_saying_why(tmp_path: Path) -> None:
    ours, theirs = tmp_path / "ours", tmp_path / "fleet"
    for path, frozen in ((ours, b"frozen stage A"), (theirs, b"frozen stage B")):
        path.mkdir()
        (path / "frozen.onnx").write_bytes(frozen)
        (path / "adaptive.safetensors").write_bytes(b"head")
    args = ["rollout", "--bundle", str(ours), "--fleet-model", str(theirs), "--devices", "2"]
    async with Command([*args, "--broker", "mqtt://127.0.0.1:9"]) as cmd:
        await cmd.ended_within(60)
    assert cmd.returncode == 2, cmd.stderr
    assert "its frozen stage differs from the fleet's" in cmd.stderr
    assert "replay memory holds latents of their frozen stage" in cmd.stderr


async def test_a_bundle_of_the_fleets_frozen_stage_rolls_its_new_head_out_to_all(
    mosquitto: Any, tmp_path: Path
) -> None:
    """``--bundle``: the same frozen stage as ``--fleet-model``, a new head -- pushed retained
    (the bundle's own bytes) and rolled out stage by stage to 100 %."""
    url = mosquitto.url
    ours, fleet_model = tmp_path / "retrained", tmp_path / "fleet"
    for path, head in ((ours, b"the new head"), (fleet_model, b"the fleet's head")):
        path.mkdir()
        (path / "frozen.onnx").write_bytes(b"one frozen stage")
        (path / "adaptive.safetensors").write_bytes(head)
    name = f"retrained-{hashlib.sha256(b'the new head').hexdigest()[:8]}"
    fleet = HandFleet(url, [f"node-{i:04d}" for i in range(20)], set())
    args = ["rollout", "--bundle", str(ours), "--fleet-model", str(fleet_model)]
    args += ["--devices", "20", "--stages", "10,100", "--soak", "5m", "--broker", str(url)]
    async with fleet.running(), Command(args) as cmd:
        await cmd.ended_within(120)
    assert cmd.returncode == 0, cmd.stderr
    assert f"rollout {name} done: 20 device(s) run head {name}" in cmd.stderr
    assert set(fleet.heads.values()) == {name} and len(fleet.heads) == 20
    state = await rollout_states(url, name)
    assert (state.state, state.stage, len(state.devices)) == ("done", 1, 20)
    async with aiomqtt.Client(**url.client_kwargs(), identifier="head-read") as c:
        await c.subscribe(head_topic("vega", name), qos=1)
        async with asyncio.timeout(5):
            message = await anext(aiter(c.messages))
    assert message.retain and message.payload == b"the new head"
    assert "Traceback" not in cmd.stderr
    async with fleet.running(), Command(args) as again:  # run twice in a row
        await again.ended_within(60)
    assert again.returncode == 0, again.stderr
    assert f"all 20 device(s) already run head {name}: nothing to do" in again.stderr
    assert "stage 1/2" not in again.stderr
