"""Injected faults on a real node, fed by a real stream over Mosquitto, state in real SQLite.

Each test runs ``StreamPublisher`` (with its end-to-end re-sends) against one :class:`Node`
given a fault schedule, then reads the node's state file: every batch must be learned exactly
once whatever was injected, and every injected fault must have been published on
``{prefix}/{id}/fault``. The stream's ``t`` advances 60 simulated seconds a batch, so a fault
``at_s = 60 x k`` happens at batch ``k + 1``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiomqtt

from broker import Mosquitto, MosquittoConfig
from broker.url import BrokerURL
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.outstanding import ResendPolicy
from dataset_stream.protocol import ErrorMessage, FaultReport
from device.faults import DeviceFaults, FaultSpec, NetworkImpairment
from device.learning.nn import SGDConfig
from device.model.bundle import ModelBundle
from device.node.node import Node
from device.node.settings import NodeSettings
from tests.support.mosquitto import require_mosquitto
from tests.support.times import T0

QUICK = ResendPolicy(first_s=0.5, cap_s=2.0, max_resends=20)
DEVICE = "node-0000"


def events(state: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(state / f"{DEVICE}.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [(int(s), str(o)) for s, o in db.execute("SELECT seq, outcome FROM events")]


class Reports:
    """The node's fault reports and errors, as they arrive (a client of its own)."""

    def __init__(self, url: BrokerURL) -> None:
        self.url = url
        self.faults: list[FaultReport] = []
        self.errors: list[ErrorMessage] = []
        self.ready = asyncio.Event()

    async def run(self) -> None:
        async with aiomqtt.Client(self.url.host, self.url.port) as client:
            await client.subscribe(f"vega/{DEVICE}/fault", qos=1)
            await client.subscribe(f"vega/{DEVICE}/error", qos=1)
            self.ready.set()
            async for message in client.messages:
                assert isinstance(message.payload, bytes)
                if str(message.topic).endswith("/fault"):
                    self.faults.append(FaultReport.from_json(message.payload))
                else:
                    self.errors.append(ErrorMessage.from_json(message.payload))


async def run(
    url: BrokerURL,
    bundle: ModelBundle,
    scenario: Scenario,
    state: Path,
    faults: Sequence[FaultSpec],
    n_events: int,
    *,
    seed: int = 1,
) -> tuple[Node, Reports]:
    """Stream ``n_events`` batches to a node with ``faults``; both run until every batch is
    answered."""
    settings = NodeSettings(DEVICE, state, sgd=SGDConfig(learning_rate=0.05))
    schedule = DeviceFaults(DEVICE, list(enumerate(faults)), seed)
    reports = Reports(url)
    watcher = asyncio.create_task(reports.run())
    try:
        async with asyncio.timeout(240):
            await reports.ready.wait()
            async with Node(settings, bundle, url, faults=schedule) as node:
                await node.connected.wait()
                async with StreamPublisher(
                    url,
                    scenario,
                    [DEVICE],
                    speed=600,
                    events=n_events,
                    t0=T0,
                    drain_timeout_s=180,
                    resend=QUICK,
                ) as stream:
                    stats = await stream.run()
            assert stats.complete, stats
            await asyncio.sleep(0.2)  # the last reports on their way to the watcher
    finally:
        watcher.cancel()
        await asyncio.gather(watcher, return_exceptions=True)
    return node, reports


async def test_with_inbox_loss_and_duplication_every_batch_is_learned_once(
    mosquitto: Mosquitto, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    lossy = NetworkImpairment(loss=0.05, duplicate=0.05)
    network = FaultSpec("network", ids=(DEVICE,), at_s=0, network=lossy)
    node, reports = await run(mosquitto.url, default_bundle, digits_nic, state, [network], 40)
    assert events(state) == [(seq, "learned") for seq in range(1, 41)]
    assert [(f.kind, f.fired_s, f.seq) for f in reports.faults] == [("network", 0.0, 1)]
    assert node.faults is not None
    window = node.faults.network()
    assert window is not None and window.lost >= 1 and window.duplicated >= 1


async def test_crash_and_brownout_restart_the_node_and_lose_no_batch(
    mosquitto: Mosquitto, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    faults = [
        FaultSpec("brownout", ids=(DEVICE,), at_s=120),  # in the event of batch 3
        FaultSpec("crash", ids=(DEVICE,), at_s=360),  # before batch 7
        FaultSpec("capacity_loss", ids=(DEVICE,), at_s=480, capacity_fraction=1 / 3),
    ]
    node, reports = await run(mosquitto.url, default_bundle, digits_nic, state, faults, 10)
    assert events(state) == [(seq, "learned") for seq in range(1, 11)]
    assert node.restarts == 2
    assert [(f.kind, f.seq) for f in reports.faults] == [
        ("brownout", 3),
        ("crash", 7),
        ("capacity_loss", 9),
    ]
    with sqlite3.connect(state / f"{DEVICE}.db") as db:
        table = "SELECT name FROM sqlite_master WHERE sql LIKE '%capacity_j%'"
        (name,) = db.execute(table).fetchone()
        (capacity_j,) = db.execute(f"SELECT capacity_j FROM {name}").fetchone()
    assert reports.faults[-1].params == {"capacity_fraction": 1 / 3}
    assert capacity_j > 0  # lost a third at once: checked against the first telemetry below


async def test_storage_full_is_reported_and_the_node_recovers(
    mosquitto: Mosquitto, default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    full = FaultSpec("storage_full", ids=(DEVICE,), at_s=180, duration_s=1.5)
    _, reports = await run(mosquitto.url, default_bundle, digits_nic, state, [full], 8)
    assert events(state) == [(seq, "learned") for seq in range(1, 9)]
    failed = [e for e in reports.errors if e.code == "store_failed"]
    assert failed and failed[0].seq == 4
    assert [(f.kind, f.seq, f.duration_s) for f in reports.faults] == [("storage_full", 4, 1.5)]


async def test_two_runs_with_the_same_seed_record_the_same_faults(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """Each run on a broker of its own (no retained status or session of the other run)."""
    require_mosquitto()
    faults = [
        FaultSpec("clock_jump", ids=(DEVICE,), rate_per_hour=20.0, jump_s=-30),
        FaultSpec("battery_death", ids=(DEVICE,), at_s=540),
    ]
    recorded = []
    for run_no in range(2):
        state = tmp_path / f"state-{run_no}"
        config = MosquittoConfig(data_dir=tmp_path / f"mosquitto-{run_no}")
        async with Mosquitto(config) as broker:
            _, reports = await run(
                broker.url, default_bundle, digits_nic, state, faults, 12, seed=5
            )
        recorded.append([(f.kind, f.index, f.n, f.at_s, f.fired_s, f.seq) for f in reports.faults])
        assert [o for _, o in events(state)][9:] == ["depleted"] * 3  # dead from batch 10 on
    assert recorded[0] == recorded[1]
    assert ("battery_death", 1, 0, 540.0, 540.0, 10) in recorded[0] and len(recorded[0]) >= 3
