"""``vega-emu fleet``: specs, shards, and a real multi-process fleet on Mosquitto.

The fleet test runs the real command (worker processes, one MQTT connection per node, or one
per worker with ``--connection shared``), a
closed-loop stream from the same spec, kills a worker with SIGKILL mid-run, and then counts what
every node's database holds: each event learned exactly once, both device classes on their own
energy profile.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from dataset_stream import Scenario, StreamPublisher
from dataset_stream.protocol import Status, fleet_ids
from device.fleet.errors import FleetSpecError
from device.fleet.shard import CPU_PARTS_ENV
from device.fleet.spec import DeviceClass, FleetSpec, shard
from device.model.bundle import ModelBundle
from device.observe.monitor import FleetMonitor
from tests.support.wait import wait_for_monitor, wait_for_telemetry

ROOT = Path(__file__).resolve().parents[2]


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_the_documented_example_spec_loads() -> None:
    spec = FleetSpec.load(ROOT / "docs" / "fleet.toml")
    assert spec.size == 1000
    ids = spec.device_ids()
    assert ids[0] == "node-0000" and ids[899] == "node-0899" and ids[-1] == "node-0999"
    classes = {c.name: ids for c, ids in spec.by_class()}
    assert len(classes["vega"]) == 900 and classes["stm32l4"][0] == "node-0900"


def test_classes_take_consecutive_ids_from_the_start_index(tmp_path: Path) -> None:
    spec = FleetSpec.load(
        write(
            tmp_path / "f.toml",
            'prefix = "dev-"\nstart_index = 10\n'
            '[[class]]\nname = "a"\ncount = 2\n[[class]]\nname = "b"\ncount = 1\n'
            'model = "m"\n',
        )
    )
    assert [(m.device_id, m.device_class.name) for m in spec.members()] == [
        ("dev-0010", "a"),
        ("dev-0011", "a"),
        ("dev-0012", "b"),
    ]
    assert spec.classes[1].model == tmp_path / "m"  # relative to the spec file


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ('[[class]]\nname = "a"\ncount = 0\n', "count must be an int >= 1"),
        ('[[class]]\nname = "a"\ncount = 2\nlr_sise = 3\n', "unknown key(s) lr_sise"),
        ('[[class]]\nname = "a"\ncount = 2\nlr_size = "big"\n', "lr_size must be int"),
        ("[[class]]\ncount = 2\n", "name"),
        ("prefix = 3\n", "prefix must be a string"),
        ("[class]\nname = 'a'\n", "write each device class as [[class]]"),
        ("", "at least one [[class]]"),
        ('[[class]]\nname = "a"\ncount = 1\n[[class]]\nname = "a"\ncount = 1\n', "distinct"),
        ("[[class]\n", "not valid TOML"),
        ('prefix = "a b"\n[[class]]\nname = "a"\ncount = 1\n', "invalid device id"),
        ('[[class]]\nname = "a"\ncount = 1\nlearning_rate = "fast"\n', "learning_rate must be"),
        (
            '[[class]]\nname = "a"\ncount = 1\nlearning_rate = 0.1\nlr = 0.1\n',
            "give learning_rate only",
        ),
    ],
)
def test_a_bad_spec_names_the_problem(tmp_path: Path, text: str, words: str) -> None:
    path = write(tmp_path / "bad.toml", text)
    with pytest.raises(FleetSpecError) as err:
        FleetSpec.load(path)
    assert words in str(err.value) and str(path) in str(err.value)


def test_learning_rate_is_written_learning_rate_and_old_specs_still_load(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    head = '[[class]]\nname = "a"\ncount = 2\n'
    new = FleetSpec.load(write(tmp_path / "new.toml", head + "learning_rate = 0.02\n"))
    assert new.classes[0].learning_rate == 0.02 and not caplog.records
    old = FleetSpec.load(write(tmp_path / "old.toml", head + "lr = 0.02\n"))  # the old key
    assert old.classes == new.classes
    assert "'a': lr is deprecated, write learning_rate" in caplog.text
    assert caplog.records[0].levelname == "WARNING" and len(caplog.records) == 1
    as_dict = old.classes[0].to_dict()  # what a worker is handed: the new spelling only
    assert as_dict["learning_rate"] == 0.02 and "lr" not in as_dict
    assert FleetSpec.load(write(tmp_path / "none.toml", head)).classes[0].learning_rate is None


@pytest.mark.parametrize("n", [1, 2, 5, 7, 100, 1001])
@pytest.mark.parametrize("workers", [1, 2, 3, 8])
def test_shards_cover_every_id_exactly_once(n: int, workers: int) -> None:
    spec = FleetSpec((DeviceClass("a", n),))
    parts = shard(spec.members(), workers)
    flat = [m.device_id for part in parts for m in part]
    assert flat == fleet_ids(n)  # every id once, in order, contiguous ranges
    sizes = [len(p) for p in parts]
    assert len(parts) == min(n, workers) and max(sizes) - min(sizes) <= 1


def events_in(db: Path) -> list[tuple[int, str]]:
    with sqlite3.connect(db) as conn:
        return list(conn.execute("SELECT seq, outcome FROM events ORDER BY seq"))


def fleet_cmd(
    spec: Path, url: Any, state: Path, workers: int, connection: str = "node"
) -> list[str]:
    return [
        sys.executable,
        "-m",
        "device.cli",
        "fleet",
        "--spec",
        str(spec),
        "--broker",
        str(url),
        "--workers",
        str(workers),
        "--state-dir",
        str(state),
        "--connection",
        connection,
    ]


def worker_pids(parent: int) -> list[int]:
    out = subprocess.run(
        ["pgrep", "-P", str(parent), "-f", "device.fleet.shard"], capture_output=True, text=True
    )
    return [int(p) for p in out.stdout.split()]


@pytest.mark.mosquitto
@pytest.mark.slow
@pytest.mark.parametrize("connection", ["node", "shared"])
async def test_a_mixed_fleet_in_two_workers_learns_every_event_once_through_a_worker_kill(
    mosquitto: Any,
    default_bundle: ModelBundle,
    digits_nic: Scenario,
    tmp_path: Path,
    connection: str,
) -> None:
    events = 4
    spec_path = write(
        tmp_path / "fleet.toml",
        '[[class]]\nname = "vega"\ncount = 40\nprofile = "vega"\nlr_size = 300\n'
        '[[class]]\nname = "stm"\ncount = 10\nprofile = "stm32l4"\nlr_size = 300\n',
    )
    spec = FleetSpec.load(spec_path)
    ids = spec.device_ids()
    state, log = tmp_path / "state", tmp_path / "fleet.log"
    parts = tmp_path / "cpu-parts"  # each worker's CPU per part of its events
    parts.mkdir()
    env = {**os.environ, "VEGA_EMU_CACHE": str(default_bundle.path.parent)}
    env[CPU_PARTS_ENV] = str(parts)
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *fleet_cmd(spec_path, mosquitto.url, state, 2, connection),
            stdout=out,
            stderr=out,
            env=env,
        )
    went_offline: set[str] = set()  # by a last will: the node's own, or its gateway's

    def seen(device: str, message: object, received: float) -> None:
        if isinstance(message, Status) and not message.online:
            went_offline.add(device)

    try:
        async with FleetMonitor(mosquitto.url, on_message=seen) as monitor:
            await wait_for_monitor(  # every node says it is idle (retained status)
                monitor,
                lambda: sum(r.status is not None for r in monitor.devices.values()) >= len(ids),
                timeout_s=120,
                what="a status of every node",
            )
            one_each = asyncio.Event()  # about one event per node learned

            def progress(sent: int, acked: int) -> None:
                if acked >= len(ids):
                    one_each.set()

            async with StreamPublisher(
                mosquitto.url,
                digits_nic,
                ids,
                speed=None,
                events=events,
                ack_timeout_s=120,
                on_progress=progress,
            ) as stream:
                work = asyncio.create_task(stream.run())
                async with asyncio.timeout(120):
                    await one_each.wait()
                victim = worker_pids(proc.pid)[0]
                os.kill(victim, signal.SIGKILL)
                async with asyncio.timeout(300):
                    stats = await work
            assert stats.acked == len(ids) * events and stats.rejected == 0
            await wait_for_telemetry(monitor, ids, seq=events)
            per_class = {
                name: {monitor.devices[d].telemetry.energy_j["total"] for d in members}  # type: ignore[union-attr]
                for name, members in (("vega", ids[:40]), ("stm", ids[40:]))
            }
        assert victim not in worker_pids(proc.pid)  # it was replaced
        assert len(worker_pids(proc.pid)) == 2
        # the killed worker's 25 nodes were seen offline (then online again, learning on)
        assert len(went_offline) == 25, sorted(went_offline)
        if connection == "shared":
            assert sorted(monitor.gateways.values()) == ["online", "online"]
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(90):
            code = await proc.wait()
    text = log.read_text()
    assert code == 0, text
    assert "died (killed by SIGKILL); restarting it" in text
    for device in ids:
        assert events_in(state / f"{device}.db") == [(s, "learned") for s in range(1, 5)], device
    # the two classes are costed on their own profiles: an STM32L4 event costs far more energy
    assert min(per_class["stm"]) > 2 * max(per_class["vega"])
    # every event each worker learned ran the frozen stage and training once, inside the event;
    # the worker that was not killed learned all 4 events of its 25 nodes
    recorded = [json.loads(p.read_text())["parts"] for p in sorted(parts.glob("worker-*.json"))]
    assert len(recorded) == 2
    for got in recorded:
        assert got["event"]["n"] == got["frozen"]["n"] == got["training"]["n"] > 0
        assert got["frozen"]["s"] > 0 and got["training"]["s"] > 0
        assert got["frozen"]["s"] + got["training"]["s"] <= got["event"]["s"]
        assert got["event"]["s"] <= got["process"]["s"] and got["eval"]["s"] <= got["process"]["s"]
    assert max(got["event"]["n"] for got in recorded) == 25 * events


def test_fleet_refuses_both_or_neither_of_n_and_spec(tmp_path: Path) -> None:
    base = [sys.executable, "-m", "device.cli", "fleet", "--state-dir", str(tmp_path / "s")]
    for extra in ([], ["-n", "2", "--spec", str(ROOT / "docs" / "fleet.toml")]):
        out = subprocess.run(base + extra, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2 and "-n N or as --spec FILE" in out.stderr


def test_fleet_names_a_bad_spec(tmp_path: Path) -> None:
    bad = write(tmp_path / "f.toml", '[[class]]\nname = "a"\ncount = 2\nprofile = "nope"\n')
    cmd = [sys.executable, "-m", "device.cli", "fleet", "--spec", str(bad)]
    out = subprocess.run(
        [*cmd, "--state-dir", str(tmp_path / "s")], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 2 and "nope" in out.stderr, out.stderr


@pytest.mark.mosquitto
@pytest.mark.slow
async def test_a_fleet_logs_each_node_in_as_itself_on_a_secured_broker(
    default_bundle: ModelBundle, digits_nic: Scenario, tmp_path: Path
) -> None:
    """Mosquitto with passwords, an ACL and client ids bound to user names: with --credentials
    every node is its own user, learns, and answers inference requests (ACL: infer, prediction)."""
    from broker import Mosquitto, MosquittoConfig
    from tests.support.mosquitto import require_mosquitto

    require_mosquitto()
    ids = fleet_ids(4)
    logins = {d: f"pw-{i}-{d}" for i, d in enumerate(ids)} | {"stream": "s3cret", "monitor": "m"}
    creds = write(tmp_path / "users.txt", "".join(f"{u}:{p}\n" for u, p in logins.items()))
    creds.chmod(0o600)
    config = MosquittoConfig(data_dir=tmp_path / "mq", password_file=creds, acl_devices=tuple(ids))
    async with Mosquitto(config) as broker:
        cmd = [sys.executable, "-m", "device.cli", "fleet", "-n", "4", "--workers", "2"]
        cmd += ["--credentials", str(creds), "--broker", str(broker.url)]
        cmd += ["--state-dir", str(tmp_path / "state")]
        env = {**os.environ, "VEGA_EMU_CACHE": str(default_bundle.path.parent)}
        log = tmp_path / "fleet.log"
        with log.open("wb") as out:
            proc = await asyncio.create_subprocess_exec(*cmd, stdout=out, stderr=out, env=env)
        try:
            stream_url = broker.url.with_credentials("stream", logins["stream"])
            monitor_url = broker.url.with_credentials("monitor", logins["monitor"])
            async with FleetMonitor(monitor_url, client_id="monitor") as monitor:
                async with StreamPublisher(
                    stream_url,
                    digits_nic,
                    ids,
                    speed=None,
                    events=3,
                    infer_rate=0.05,
                    client_id="stream",
                    ack_timeout_s=120,
                ) as stream:
                    async with asyncio.timeout(180):
                        stats = await stream.run()
                await wait_for_monitor(
                    monitor,
                    lambda: all(monitor.devices[d].predictions > 0 for d in ids),
                    timeout_s=30,
                    what="a prediction of every node",
                )
                predictions = {d: monitor.devices[d].predictions for d in ids}
        finally:
            proc.send_signal(signal.SIGTERM)
            async with asyncio.timeout(90):
                code = await proc.wait()
    assert code == 0, log.read_text()
    assert stats.acked == 3 * len(ids) and stats.rejected == 0
    assert all(n > 0 for n in predictions.values()), predictions  # infer in, prediction out
    for device in ids:
        assert events_in(tmp_path / "state" / f"{device}.db") == [(s, "learned") for s in (1, 2, 3)]
