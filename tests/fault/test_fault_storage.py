"""A full disk under a running node: nothing acknowledged that was not committed, nothing lost.

A real ``vega-emu node`` process on Mosquitto; its file-size limit is dropped to zero with
``prlimit`` (what a full disk looks like to SQLite: every write that grows a file fails), so the
eval set cannot be saved and the next event cannot commit. The node must say so (``store_failed``
with the batch's seq, retained status ``error``), keep the batch unacknowledged, survive a
``kill -9`` in that state, and learn the batch once the disk has room again.
"""

from __future__ import annotations

import asyncio
import resource
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiomqtt
import pytest

from broker import BrokerURL
from dataset_stream import Scenario
from dataset_stream.protocol import ErrorMessage, Status, Telemetry, encode_batch, encode_eval
from tests.support.times import T0
from tests.support.wait import wait_until

pytestmark = pytest.mark.fault

DEVICE = "node-0004"


def start_node(url: BrokerURL, state: Path, model: Path, log: Path) -> subprocess.Popen[bytes]:
    cmd = [sys.executable, "-m", "device.cli", "node", "--broker", str(url), "--id", DEVICE]
    cmd += ["--state-dir", str(state), "--model", str(model), "--hold", "5"]
    with log.open("ab") as out:
        return subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT)


def set_file_limit(proc: subprocess.Popen[bytes], limit: int) -> None:
    resource.prlimit(proc.pid, resource.RLIMIT_FSIZE, (limit, resource.RLIM_INFINITY))


class Watcher:
    """Collects what the node says, typed, in arrival order."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client

    async def next(self, want: type[Any], within_s: float = 60.0) -> Any:
        """The next message of type ``want`` (others are skipped)."""
        async with asyncio.timeout(within_s):
            async for message in self.client.messages:
                assert isinstance(message.payload, bytes)
                kind = str(message.topic).rsplit("/", 1)[-1]
                parsed = {"telemetry": Telemetry, "error": ErrorMessage, "status": Status}[kind]
                obj = parsed.from_json(message.payload)
                if isinstance(obj, want):
                    return obj
        raise AssertionError("unreachable")

    async def status(self, state: str) -> Status:
        while True:
            status = await self.next(Status)
            if status.state == state:
                return status


def events_logged(state: Path) -> list[int]:
    with sqlite3.connect(state / f"{DEVICE}.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        return [int(r[0]) for r in db.execute("SELECT seq FROM events ORDER BY seq")]


async def test_a_full_disk_delays_learning_and_loses_nothing(
    mosquitto: Any, default_bundle: Any, digits_nic: Scenario, tmp_path: Path
) -> None:
    url: BrokerURL = mosquitto.url
    state, log = tmp_path / "state", tmp_path / "node.log"
    events = digits_nic.events(DEVICE)
    batches = [
        encode_batch(e.x, e.y, seq=i, t=T0 + 60 * i, source="t") for i, e in enumerate(events, 1)
    ]
    ex, ey = digits_nic.eval_set
    proc = start_node(url, state, default_bundle.path, log)
    try:
        async with aiomqtt.Client(**url.client_kwargs()) as client:
            for kind in ("telemetry", "error", "status"):
                await client.subscribe(f"vega/{DEVICE}/{kind}", qos=1)
            watch = Watcher(client)
            await watch.status("idle")
            await client.publish(f"vega/{DEVICE}/batch", batches[0], qos=1)
            assert (await watch.next(Telemetry)).seq == 1

            set_file_limit(proc, 0)  # the disk is full from now on
            await client.publish(
                f"vega/{DEVICE}/eval", encode_eval(ex, ey, source="t"), qos=1, retain=True
            )
            eval_error = await watch.next(ErrorMessage)
            assert eval_error.code == "store_failed" and eval_error.seq is None
            await client.publish(f"vega/{DEVICE}/batch", batches[1], qos=1)
            failed = await watch.next(ErrorMessage)
            assert (failed.code, failed.seq) == ("store_failed", 2)
            status = await watch.status("error")
            assert status.reason and "storage" in status.reason and status.last_seq == 1

            proc.kill()  # in that state: seq 2 was never acknowledged, the broker keeps it
            proc.wait(timeout=10)
            assert events_logged(state) == [1]
            proc = start_node(url, state, default_bundle.path, log)  # room again
            two = await watch.next(Telemetry)
            assert two.seq == 2 and two.events == 2
            await wait_until(  # the retained eval set comes again; now it is saved
                (state / f"{DEVICE}.eval.safetensors").exists,
                timeout_s=30,
                what="the eval set saved once the disk has room",
            )

            set_file_limit(proc, 0)
            await client.publish(f"vega/{DEVICE}/batch", batches[2], qos=1)
            assert (await watch.next(ErrorMessage)).seq == 3
            await watch.status("error")
            # the subject: the disk stays full this long, while the node retries (unseen: with
            # no room it cannot even write its log)
            await asyncio.sleep(1.0)
            set_file_limit(proc, resource.RLIM_INFINITY)  # the same process recovers
            three = await watch.next(Telemetry)
            assert three.seq == 3 and three.events == 3 and three.gaps == 0
            await watch.status("idle")
            await client.publish(f"vega/{DEVICE}/batch", batches[3], qos=1)
            assert (await watch.next(Telemetry)).seq == 4
    finally:
        proc.terminate()
        proc.wait(timeout=15)
    assert events_logged(state) == [1, 2, 3, 4], log.read_text()[-3000:]
