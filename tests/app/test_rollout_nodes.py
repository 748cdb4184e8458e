"""The operator's commands on real nodes: a fleet of ``vega-emu fleet`` processes learning a
closed-loop stream on Mosquitto, changed with ``vega-emu ctl`` and given a broken head with
``vega-emu rollout``."""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
from safetensors.numpy import load_file, save_file

from broker.url import BrokerURL
from dataset_stream.protocol import ReportedState, RolloutState
from device.model.bundle import ModelBundle
from tests.support.cli import Command

DEVICES = 8


@contextlib.asynccontextmanager
async def learning_fleet(url: BrokerURL, bundle: ModelBundle, state: Path) -> AsyncIterator[None]:
    """``DEVICES`` nodes in one worker, learning a closed-loop stream while the block runs."""
    fleet = ["fleet", "-n", str(DEVICES), "--workers", "1", "--broker", str(url)]
    fleet += ["--state-dir", str(state), "--model", str(bundle.path)]
    stream = ["stream", "--devices", str(DEVICES), "--dataset", "digits", "--scenario", "nic"]
    stream += ["--speed", "max", "--events", "2000", "--broker", str(url)]
    async with Command(fleet) as nodes:
        await nodes.wait_for(f"fleet: {DEVICES} nodes", timeout_s=120)
        async with Command(stream) as producer:
            await producer.wait_for("events x", timeout_s=120)
            yield
        assert "Traceback" not in nodes.stderr


class Telemetry:
    """The fleet's telemetry as it comes (replay bits and accuracy by device)."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.latest: dict[str, dict[str, Any]] = {}
        self.arrived = asyncio.Event()

    async def read(self) -> None:
        async for message in self.client.messages:
            assert isinstance(message.payload, bytes)
            obj = json.loads(message.payload)
            self.latest[obj["device"]] = obj
            self.arrived.set()

    async def until(self, what: str, holds: Any, timeout_s: float = 120.0) -> None:
        async with asyncio.timeout(timeout_s):
            while not holds():
                self.arrived.clear()
                await self.arrived.wait()


async def test_ctl_set_all_converges_and_the_telemetry_shows_it(
    mosquitto: Any, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    url = mosquitto.url
    async with (
        learning_fleet(url, default_bundle, tmp_path / "state"),
        aiomqtt.Client(**url.client_kwargs(), identifier="ctl-nodes-watch") as watch,
    ):
        await watch.subscribe("vega/+/telemetry", qos=0)
        seen = Telemetry(watch)
        reader = asyncio.create_task(seen.read())
        try:
            await seen.until("every device learning", lambda: len(seen.latest) == DEVICES)
            ctl = ["ctl", "set", "--all", "lr_bits=6", "--wait", "--broker", str(url)]
            async with Command(ctl) as cmd:
                await cmd.ended_within(120)
            assert cmd.returncode == 0, cmd.stderr
            assert f"{DEVICES} converged, 0 refused, 0 did not answer" in cmd.stderr
            seen.latest.clear()
            await seen.until(
                "replay at 6 bits",
                lambda: (
                    len(seen.latest) == DEVICES
                    and all(t["replay"]["bits"] == 6 for t in seen.latest.values())
                ),
            )
        finally:
            reader.cancel()
            await asyncio.gather(reader, return_exceptions=True)


async def test_a_rollout_of_a_broken_head_halts_at_5_percent_and_rolls_back(
    mosquitto: Any, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    url = mosquitto.url
    weights = load_file(str(default_bundle.path / "adaptive.safetensors"))
    rng = np.random.default_rng(0)
    broken = {k: (rng.standard_normal(v.shape) * 50).astype(np.float32) for k, v in weights.items()}
    head = tmp_path / "broken.safetensors"
    save_file(broken, str(head))
    args = ["rollout", "--head", str(head), "--name", "broken", "--all"]
    args += ["--stages", "5,25,100", "--soak", "10m", "--broker", str(url)]
    args += ["--halt-if", "accuracy_drop > 0.05 or errors > 1%"]
    async with learning_fleet(url, default_bundle, tmp_path / "state"):
        async with Command(args) as cmd:
            await cmd.ended_within(300)
        assert cmd.returncode == 1, cmd.stderr
        assert "halted: stage 5 %: accuracy_drop > 0.05" in cmd.stderr
        assert "rollback: 1 converged, 0 refused, 0 did not answer" in cmd.stderr
        state = await retained(url, "vega/rollout/broken/state")
        rollout = RolloutState.from_json(state)
        assert (rollout.state, rollout.stage, len(rollout.devices)) == ("rolled_back", 0, 1)
        moved = rollout.devices[0]
        reported = ReportedState.from_json(await retained(url, f"vega/{moved}/reported"))
        assert reported.settings["head"] == "own"
    assert "Traceback" not in cmd.stderr


async def retained(url: BrokerURL, where: str) -> bytes:
    async with aiomqtt.Client(**url.client_kwargs(), identifier="rollout-nodes-read") as c:
        await c.subscribe(where, qos=1)
        async with asyncio.timeout(10):
            message = await anext(aiter(c.messages))
    assert isinstance(message.payload, bytes)
    return message.payload
