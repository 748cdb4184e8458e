"""Mosquitto SIGKILLed three times under a stream: a real fleet learns every seq exactly once.

A ``vega-emu fleet`` of 6 nodes in 2 worker processes (a session per node, or one shared
gateway connection per worker) learns from a stream of 30 events per device at speed 240.
Three times, once the slowest node has learned a given seq, Mosquitto is killed with SIGKILL
and started again on the same port :data:`DOWN_S` later: with persistence saved every second
(what it had not saved is gone, acknowledged or not), or without persistence (it comes back
empty: no session, no subscription, no queued batch).

The stream is the producer that makes delivery end to end: it keeps every batch until the
node's answer for its seq arrives, and publishes the unanswered ones again after each reconnect
and when a node announces itself again (``wait_for_answers``: it ends once every batch is
answered). So every batch the broker lost comes again, and the nodes' seq rules keep each one
learned once. At the end every state file must pass ``PRAGMA integrity_check`` and hold seqs
1..30 exactly once, learned, with no gap; the stream must have every batch answered as learned.
"""

from __future__ import annotations

import asyncio
import functools
import signal
import sqlite3
import sys
from pathlib import Path

import aiomqtt
import pytest

from broker import BrokerURL, Mosquitto, MosquittoConfig
from dataset_stream import Scenario, StreamPublisher
from dataset_stream.reconnect import ReconnectPolicy
from device.model.bundle import ModelBundle
from tests.support.mosquitto import require_mosquitto
from tests.support.times import T0
from tests.support.wait import wait_until

pytestmark = pytest.mark.fault

NODES = 6
WORKERS = 2
EVENTS = 30
SPEED = 240.0
#: the slowest node's last seq at each kill: early, middle, late in the run
KILL_AT = (5, 13, 21)
DOWN_S = 4.0
IDS = [f"node-{i:04d}" for i in range(NODES)]


class FleetProcess:
    """``vega-emu fleet`` as an operator runs it; its output goes to a log file."""

    def __init__(
        self, url: BrokerURL, connection: str, state: Path, model: Path, log: Path
    ) -> None:
        self.cmd = [
            sys.executable,
            "-m",
            "device.cli",
            "fleet",
            "--broker",
            str(url),
            "-n",
            str(NODES),
            "--workers",
            str(WORKERS),
            "--connection",
            connection,
            "--state-dir",
            str(state),
            "--model",
            str(model),
            "--epochs",
            "1",  # delivery is under test, not learning: quick events
        ]
        self.log = log
        self.proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = await asyncio.create_subprocess_exec(
                *self.cmd, stdout=out, stderr=out, stdin=asyncio.subprocess.DEVNULL
            )

    async def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.returncode is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            async with asyncio.timeout(30):
                await proc.wait()
        except TimeoutError:
            proc.kill()
            await proc.wait()


def last_seq(db_path: Path) -> int:
    """The node's committed last seq; 0 before its first or before its database exists."""
    if not db_path.exists():
        return 0
    try:
        with sqlite3.connect(db_path, timeout=5) as db:
            row = db.execute("SELECT last_seq FROM state").fetchone()
    except sqlite3.Error:
        return 0  # not created yet
    return 0 if row is None or row[0] is None else int(row[0])


def lowest(state: Path) -> int:
    """The last seq of the slowest node."""
    return min(last_seq(state / f"{d}.db") for d in IDS)


def learned_up_to(state: Path, seq: int) -> bool:
    return lowest(state) >= seq


async def wait_online(url: BrokerURL) -> None:
    """Until every node has announced itself (its retained status is not ``offline``)."""
    online: set[str] = set()
    async with aiomqtt.Client(**url.client_kwargs()) as client:
        await client.subscribe("vega/+/status", qos=1)
        async for message in client.messages:
            device = str(message.topic).split("/")[1]
            if isinstance(message.payload, bytes) and b'"offline"' not in message.payload:
                online.add(device)
            if online >= set(IDS):
                return


@pytest.mark.parametrize("persistence", [True, False], ids=["persistent", "empty"])
@pytest.mark.parametrize("connection", ["node", "shared"])
async def test_three_broker_kills_lose_nothing_and_repeat_nothing(
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    connection: str,
    persistence: bool,
) -> None:
    require_mosquitto()
    state = tmp_path / "state"
    config = MosquittoConfig(
        data_dir=tmp_path / "mosquitto", persistence=persistence, autosave_interval_s=1
    )
    mosquitto = Mosquitto(config)
    await mosquitto.start()
    url = mosquitto.url
    fleet = FleetProcess(url, connection, state, default_bundle.path, tmp_path / "fleet.log")
    kills: list[int] = []
    try:
        await fleet.start()
        async with asyncio.timeout(120):
            await wait_online(url)
        async with asyncio.timeout(150):
            async with StreamPublisher(
                url,
                digits_nic,
                IDS,
                speed=SPEED,
                events=EVENTS,
                t0=T0,
                wait_for_answers=True,
                ack_timeout_s=120.0,
                reconnect=ReconnectPolicy(initial_s=0.1, cap_s=1.0, max_outage_s=60.0),
            ) as stream:
                run = asyncio.create_task(stream.run())
                for seq in KILL_AT:
                    # other processes' databases: nothing to wait on but the files themselves
                    reached = functools.partial(learned_up_to, state, seq)
                    await wait_until(reached, 60, what=f"every node at seq {seq}")
                    kills.append(lowest(state))
                    await mosquitto.kill()
                    await asyncio.sleep(DOWN_S)  # the outage under test
                    await mosquitto.start()
                stats = await run
    except (TimeoutError, AssertionError) as exc:
        report = {d: last_seq(state / f"{d}.db") for d in IDS}
        tail = fleet.log.read_text(errors="replace")[-4000:]
        pytest.fail(f"{exc!r}: last seqs {report}, kills at {kills}\n{tail}")
    finally:
        await fleet.stop()
        await mosquitto.stop()

    assert len(kills) == len(KILL_AT) and max(kills) < EVENTS  # each kill came mid-run
    assert stats.link.reconnects >= len(KILL_AT)
    assert (stats.sent, stats.acked, stats.rejected, stats.lost) == (180, 180, 0, 0)
    assert stats.stalled == ()
    for device in IDS:
        with sqlite3.connect(state / f"{device}.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            rows = db.execute("SELECT seq, outcome FROM events ORDER BY seq").fetchall()
            counters = db.execute("SELECT last_seq, events_applied, gaps FROM state").fetchone()
        assert rows == [(s, "learned") for s in range(1, EVENTS + 1)], device
        assert counters == (EVENTS, EVENTS, 0), device
    assert fleet.proc is not None and fleet.proc.returncode == 0, fleet.log.read_text()[-2000:]
