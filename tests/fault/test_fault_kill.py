"""Kill it and look: ``kill -9`` of real node processes while a paced stream runs on Mosquitto.

Three ``vega-emu node`` processes learn from a paced stream (QoS 1, persistent sessions,
Mosquitto with persistence). Twenty-one times, a random node is killed with SIGKILL at a random
moment (starting up, learning, committing, idle) and restarted at once. At the end every state
file must pass ``PRAGMA integrity_check``, hold every seq exactly once, in order, learned, and
its weights, LR memory and battery must equal those of a node that learned the same batches
without ever being killed.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import Batch, encode_batch
from device.fleet.spec import DeviceClass
from device.model.bundle import ModelBundle
from device.model.frozen import FrozenStage
from device.node.engine import NodeEngine
from tests.support.times import T0

pytestmark = pytest.mark.fault

DEVICES = ("node-0000", "node-0001", "node-0002")
EVENTS = 40
KILLS = 21
PERIOD_S = 0.25  # one batch per device every PERIOD_S: the stream takes 10 s
SEED = int(os.environ.get("VEGA_EMU_FAULT_SEED", "20261125"))


class NodeProcess:
    """One ``vega-emu node`` process, restartable; its output goes to a log file."""

    def __init__(self, device: str, url: BrokerURL, state: Path, model: Path, logs: Path):
        self.device = device
        self.cmd = [
            sys.executable,
            "-m",
            "device.cli",
            "node",
            "--broker",
            str(url),
            "--id",
            device,
            "--state-dir",
            str(state),
            "--model",
            str(model),
            "--hold",
            "5",
        ]
        self.log = logs / f"{device}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        with self.log.open("ab") as out:
            out.write(f"--- start {self.starts}\n".encode())
            out.flush()
            self.proc = subprocess.Popen(self.cmd, stdout=out, stderr=subprocess.STDOUT)
        self.starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def last_seq(db_path: Path) -> int | None:
    if not db_path.exists():
        return None
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            row = db.execute("SELECT last_seq FROM state").fetchone()
    except sqlite3.Error:
        return None  # not created yet
    return None if row is None or row[0] is None else int(row[0])


async def caught_up(state: Path, stall_s: float = 90.0) -> None:
    """Until every node has learned every event; TimeoutError if none moves for ``stall_s``
    (a slow machine only makes this take longer, a stuck node fails it)."""
    loop = asyncio.get_running_loop()
    seen: list[int | None] = []
    moved = loop.time()
    while True:
        now = [last_seq(state / f"{d}.db") for d in DEVICES]
        if all(seq == EVENTS for seq in now):
            return
        if now != seen:
            seen, moved = now, loop.time()
        if loop.time() - moved > stall_s:
            raise TimeoutError
        # other processes' databases: nothing to wait on but the files themselves
        await asyncio.sleep(0.5)


async def stream(url: BrokerURL, batches: dict[str, list[bytes]]) -> None:
    async with aiomqtt.Client(**url.client_kwargs(), identifier="fault-stream") as client:
        for k in range(EVENTS):
            for device in DEVICES:
                await client.publish(f"vega/{device}/batch", batches[device][k], qos=1)
            await asyncio.sleep(PERIOD_S)  # pacing: one event per device per period


async def wait_online(url: BrokerURL) -> None:
    """Until every node has connected once (its retained status is not ``offline``)."""
    online: set[str] = set()
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        await client.subscribe("vega/+/status", qos=1)
        async for message in client.messages:
            device = str(message.topic).split("/")[1]
            if isinstance(message.payload, bytes) and b'"offline"' not in message.payload:
                online.add(device)
            if online >= set(DEVICES):
                return


def node_state(
    bundle: ModelBundle, device: str, state: Path, learn: Sequence[Batch] = ()
) -> dict[str, Any]:
    """Weights, LR memory and battery of the node stored in ``state``, after learning ``learn``
    (a node that was never killed, when ``state`` starts empty)."""
    settings = DeviceClass("default", count=1).settings(device, state, bundle)
    engine = NodeEngine(settings, bundle, FrozenStage.shared(bundle))
    try:
        for batch in learn:
            engine.apply(batch)
        return {
            "weights": {k: v.copy() for k, v in engine.head.params().items()},
            "lrs": engine.memory.contents(),
            "remaining_j": engine.battery.remaining_j,
        }
    finally:
        engine.close()


async def test_twenty_kill_9_lose_nothing_and_repeat_nothing(
    mosquitto: Any, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = mosquitto.url
    state, logs = tmp_path / "state", tmp_path / "logs"
    state.mkdir()
    logs.mkdir()
    rng = random.Random(SEED)
    events = {
        d: [
            Batch(e.x, e.y, seq=i, t=T0 + 60 * i, source="fault")
            for i, e in enumerate(digits_nic.events(d)[:EVENTS], 1)
        ]
        for d in DEVICES
    }
    payloads = {
        d: [encode_batch(b.x, b.y, seq=b.seq, t=b.t, source=b.source) for b in batches]
        for d, batches in events.items()
    }
    nodes = {d: NodeProcess(d, url, state, default_bundle.path, logs) for d in DEVICES}
    kills: list[tuple[str, float]] = []
    try:
        for node in nodes.values():
            node.start()
        async with asyncio.timeout(60):
            await wait_online(url)
        publisher = asyncio.create_task(stream(url, payloads))
        for _ in range(KILLS):
            await asyncio.sleep(rng.uniform(0.3, 2.5))  # the subject: kills at random times
            victim = nodes[rng.choice(DEVICES)]
            kills.append((victim.device, asyncio.get_running_loop().time()))
            victim.kill()
            victim.start()
        async with asyncio.timeout(60):
            await publisher
        await caught_up(state)  # every node works through what queued at the broker
    except TimeoutError:
        report = {d: last_seq(state / f"{d}.db") for d in DEVICES}
        tail = "\n".join(n.log.read_text()[-3000:] for n in nodes.values())
        pytest.fail(f"nodes did not finish: last seqs {report}; kills {kills}\n{tail}")
    finally:
        for node in nodes.values():
            node.stop()

    assert len(kills) == KILLS
    for device in DEVICES:
        db_path = state / f"{device}.db"
        with sqlite3.connect(db_path) as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
            counters = db.execute("SELECT last_seq, events_applied, gaps FROM state").fetchone()
        assert rows == [(s, "learned") for s in range(1, EVENTS + 1)], device
        assert counters == (EVENTS, EVENTS, 0), device
        expected = node_state(default_bundle, device, tmp_path / "ref", events[device])
        got = node_state(default_bundle, device, state)
        for name, value in expected["weights"].items():
            np.testing.assert_allclose(got["weights"][name], value, rtol=1e-5, atol=1e-6)
        for stored, reference in zip(got["lrs"], expected["lrs"], strict=True):
            np.testing.assert_array_equal(stored, reference)
        assert got["remaining_j"] == pytest.approx(expected["remaining_j"], rel=1e-9)
