"""``vega-emu bridge``: live samples from stdin, files and MQTT become batches and inference
requests on a real broker; bad samples are counted by reason, never forwarded; a node learns them.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import struct
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import aiomqtt
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from broker import Mosquitto
from dataset_stream.bridge import (
    REASONS,
    Fields,
    Record,
    RecordKind,
    Rejected,
    Sample,
    SampleSpec,
    Windower,
    WindowSettings,
    parse_record,
)
from dataset_stream.protocol import Status, decode_batch, decode_infer
from device.model.bundle import ModelBundle
from tests.support.wait import wait_for_line

SPEC = SampleSpec((1, 32, 32), "uint8", 10)  # the default model's input
SENSOR = SampleSpec((3, 4), "float32", 6)
FIELDS = Fields(device_field="device")
ROOT = Path(__file__).resolve().parents[2]


def image(seed: int) -> list[int]:
    return np.random.default_rng(seed).integers(0, 256, 1024).tolist()


def line(device: str, seed: int, y: Any = None, **extra: Any) -> str:
    return json.dumps({"device": device, "x": image(seed), "y": y, **extra})


def record(body: bytes | str, kind: RecordKind = RecordKind.JSON, **kw: Any) -> Record:
    data = body.encode() if isinstance(body, str) else body
    return Record(kind, data, "line 1", 1000.0, **kw)


# -- samples: pure checks ------------------------------------------------------------------------


def test_flat_and_nested_samples_take_the_model_shape() -> None:
    flat = parse_record(record(json.dumps({"device": "a", "x": list(range(12)), "y": 5})),
                        SENSOR, FIELDS)  # fmt: skip
    nested = [[0.0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]]
    deep = parse_record(record(json.dumps({"device": "a", "x": nested, "t": 7})), SENSOR, FIELDS)
    assert isinstance(flat, Sample) and isinstance(deep, Sample)
    assert flat.x.shape == deep.x.shape == (3, 4) and flat.x.dtype == np.float32
    np.testing.assert_array_equal(flat.x, deep.x)
    assert (flat.y, flat.t, deep.y, deep.t) == (5, None, None, 7.0)


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({"x": list(range(12)), "y": 1}, "bad_device"),
        ({"device": "a b", "x": list(range(12))}, "bad_device"),
        ({"device": "a", "y": 1}, "no_x"),
        ({"device": "a", "x": "1,2,3"}, "bad_type"),
        ({"device": "a", "x": [True] * 12}, "bad_type"),
        ({"device": "a", "x": ["1"] * 12}, "bad_type"),
        ({"device": "a", "x": list(range(11))}, "bad_length"),
        ({"device": "a", "x": [[1, 2, 3, 4]] * 4}, "bad_length"),
        ({"device": "a", "x": [[[1]] * 4] * 3}, "bad_type"),
        ({"device": "a", "x": [1e39] + [0] * 11}, "out_of_range"),
        ({"device": "a", "x": [10**400] + [0] * 11}, "out_of_range"),
        ({"device": "a", "x": list(range(12)), "y": 6}, "bad_label"),
        ({"device": "a", "x": list(range(12)), "y": -1}, "bad_label"),
        ({"device": "a", "x": list(range(12)), "y": 1.5}, "bad_label"),
        ({"device": "a", "x": list(range(12)), "y": "1"}, "bad_label"),
        ({"device": "a", "x": list(range(12)), "t": "noon"}, "bad_time"),
    ],
)
def test_bad_samples_are_rejected_with_their_reason(obj: dict[str, Any], reason: str) -> None:
    got = parse_record(record(json.dumps(obj)), SENSOR, FIELDS)
    assert isinstance(got, Rejected) and got.reason == reason, got


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("not json", "bad_format"),
        ("[1, 2]", "bad_format"),
        ('{"device": "a", "x": [NaN, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}', "non_finite"),
        ('{"device": "a", "x": [1e400, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]}', "non_finite"),
        ('{"device": "a", "x": [' + "9" * 5000 + "]}", "bad_format"),
        ("[" * 100_000 + "]" * 100_000, "bad_format"),
        (b"\xff\xfe{}", "bad_format"),
    ],
)
def test_hostile_text_is_rejected(text: str | bytes, reason: str) -> None:
    got = parse_record(record(text), SENSOR, FIELDS)
    assert isinstance(got, Rejected) and got.reason == reason, got


def test_uint8_models_take_integers_0_to_255() -> None:
    ok = parse_record(record(line("a", 1, 3)), SPEC, FIELDS)
    assert isinstance(ok, Sample) and ok.x.dtype == np.uint8 and ok.y == 3
    for bad in ([256] + [0] * 1023, [0.5] + [0] * 1023, [-1] + [0] * 1023):
        got = parse_record(record(json.dumps({"device": "a", "x": bad})), SPEC, FIELDS)
        assert isinstance(got, Rejected) and got.reason == "out_of_range"
        assert "integers 0..255" in got.detail


def test_raw_payloads_and_fixed_devices() -> None:
    raw = struct.pack("<12f", *range(12))
    got = parse_record(record(raw, RecordKind.RAW, device="dev-7"), SENSOR, Fields())
    assert isinstance(got, Sample) and got.device == "dev-7" and got.y is None
    short = parse_record(record(raw[:-4], RecordKind.RAW, device="dev-7"), SENSOR, Fields())
    assert isinstance(short, Rejected) and short.reason == "bad_length"
    nan = struct.pack("<12f", float("nan"), *range(11))
    got = parse_record(record(nan, RecordKind.RAW), SENSOR, Fields(device="fixed"))
    assert isinstance(got, Rejected) and (got.device, got.reason) == ("fixed", "non_finite")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=14) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=60,
)


@given(
    st.one_of(
        st.binary(max_size=200),
        st.text(max_size=200).map(str.encode),
        st.fixed_dictionaries(
            {"device": json_values | st.just("a"), "x": json_values, "y": json_values},
            optional={"t": json_values},
        ).map(lambda d: json.dumps(d).encode()),
    )
)
def test_hostile_records_never_crash_the_parser(body: bytes) -> None:
    for kind in (RecordKind.JSON, RecordKind.RAW):
        got = parse_record(Record(kind, body, "h", 0.0), SENSOR, FIELDS)
        if isinstance(got, Rejected):
            assert got.reason in REASONS
        else:
            assert got.x.shape == (3, 4) and np.isfinite(got.x).all()
            assert got.y is None or 0 <= got.y < 6


# -- windows: pure checks ------------------------------------------------------------------------


def test_windows_per_device_close_on_the_clock_and_flush() -> None:
    w = Windower(WindowSettings(window_s=60, infer_s=1, capacity=3, infer_capacity=2))
    x = np.zeros((3, 4), np.float32)
    assert w.add("a", x, 1, clock=100, t=100) == (True, [])
    assert w.add("b", x, 2, clock=130, t=130) == (True, [])
    assert w.add("a", x, None, clock=130.5, t=130.5) == (True, [])
    fit, closed = w.add("a", x, 3, clock=159, t=159)
    assert fit and len(closed) == 1 and closed[0].device == "a" and len(closed[0].x) == 1
    fit, closed = w.add("a", x, 4, clock=161, t=161)  # a's first window ended at 160
    assert fit and [(type(o).__name__, o.device) for o in closed] == [("LearnBatch", "a")]
    assert closed[0].y.tolist() == [1, 3] and closed[0].t == 159
    assert w.add("a", x, 5, clock=162, t=50)[0]  # a late capture time joins the open window
    assert w.add("a", x, 6, clock=163, t=163)[0]
    assert w.add("a", x, 7, clock=164, t=164)[0] is False  # full: 3 samples
    out = w.flush()
    assert [(type(o).__name__, o.device, len(o.x)) for o in out] == [
        ("LearnBatch", "b", 1),
        ("LearnBatch", "a", 3),
    ]
    assert w.open_windows == 0


# -- the command, against Mosquitto ----------------------------------------------------------------


async def bridge_proc(*args: str, stdin: bool = False) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "device.cli",
        "bridge",
        *args,
        stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env={**os.environ, "COLUMNS": "200"},
    )


async def finish(
    proc: asyncio.subprocess.Process, data: bytes | None = None, *, unanswered: str | None = None
) -> dict[str, Any]:
    """The bridge's JSON summary once it exited: with status 0, or, with ``unanswered`` (the
    devices and seqs its error line must name), with status 3 (no node answered them)."""
    async with asyncio.timeout(60):
        out, err = await proc.communicate(data)
    text = " ".join(err.decode().split())
    if unanswered is None:
        assert proc.returncode == 0, text
    else:
        assert proc.returncode == 3, text
        assert f"got no answer from their node: {unanswered}" in text, text
    summary: dict[str, Any] = json.loads(out)
    return summary


class Listener:
    """Every batch and inference request published under ``vega/``, decoded."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self.client = client
        self.batches: list[tuple[str, Any]] = []
        self.infers: list[tuple[str, Any]] = []
        self.arrived = asyncio.Event()

    async def run(self) -> None:
        async for message in self.client.messages:
            device = message.topic.value.split("/")[1]
            assert isinstance(message.payload, bytes)
            if message.topic.value.endswith("/batch"):
                self.batches.append((device, decode_batch(message.payload)))
            else:
                self.infers.append((device, decode_infer(message.payload)))
            self.arrived.set()

    async def wait(self, batches: int, infers: int = 0, within: float = 20) -> None:
        async with asyncio.timeout(within):
            while len(self.batches) < batches or len(self.infers) < infers:
                self.arrived.clear()
                await self.arrived.wait()


async def listening(url: Any) -> tuple[aiomqtt.Client, Listener, asyncio.Task[None]]:
    client = aiomqtt.Client(**url.client_kwargs())
    await client.__aenter__()
    await client.subscribe([("vega/+/batch", 1), ("vega/+/infer", 1)])
    listener = Listener(client)
    return client, listener, asyncio.create_task(listener.run())


async def stop_listening(client: aiomqtt.Client, task: asyncio.Task[None]) -> None:
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    await client.__aexit__(None, None, None)


def lines(rows: Iterable[str]) -> bytes:
    return ("\n".join(rows) + "\n").encode()


async def test_stdin_json_lines_become_batches_continuing_the_retained_seq(
    mosquitto: Mosquitto, default_bundle: ModelBundle
) -> None:
    url = mosquitto.url
    async with aiomqtt.Client(**url.client_kwargs()) as node:
        status = Status(state="idle", device="dev-a", last_seq=41)
        await node.publish("vega/dev-a/status", status.to_json(), qos=1, retain=True)
    rows = [line("dev-a", i, i % 10, t=1000 + i) for i in range(12)]
    rows += [line("dev-b", 100 + i, 7) for i in range(3)]
    rows += [line("dev-a", 200 + i) for i in range(4)]  # unlabelled: inference
    rows += [line("dev-b", 300, None)]
    rows += [
        "not json",
        "",
        json.dumps({"device": "dev-a", "x": [1, 2, 3], "y": 1}),
        json.dumps({"device": "dev-a", "x": image(1), "y": 10}),
        json.dumps({"device": "dev-b", "x": [float("nan")] * 1024}),
        json.dumps({"device": "dev-b", "x": ["a"] * 1024}),
        json.dumps({"x": image(2), "y": 1}),
    ]
    client, listener, task = await listening(url)
    try:
        proc = await bridge_proc(
            *("--broker", str(url), "--from", "-", "--device-field", "device", "--json"),
            *("--drain-timeout", "0"),  # no node runs: nothing will answer
            stdin=True,
        )
        summary = await finish(proc, lines(rows), unanswered="dev-a: 42; dev-b: 1")
        await listener.wait(batches=2, infers=2)
    finally:
        await stop_listening(client, task)
    batches = dict(listener.batches)
    assert sorted(batches) == ["dev-a", "dev-b"] and len(listener.batches) == 2
    a, b = batches["dev-a"], batches["dev-b"]
    assert (a.seq, b.seq) == (42, 1)  # dev-a continues its retained status; dev-b has none
    assert a.x.shape == (12, 1, 32, 32) and a.x.dtype == np.uint8
    assert a.y.tolist() == [i % 10 for i in range(12)] and a.t == 1011.0
    np.testing.assert_array_equal(a.x[3].ravel(), image(3))
    assert b.x.shape == (3, 1, 32, 32) and b.y.tolist() == [7, 7, 7]
    infers = dict(listener.infers)
    assert infers["dev-a"].x.shape == (4, 1, 32, 32)
    assert infers["dev-a"].seq > 1_700_000_000_000  # wall-clock ms: a restart never repeats
    assert infers["dev-b"].x.shape == (1, 1, 32, 32)
    devices = summary["devices"]
    assert devices["dev-a"]["batches"] == 1 and devices["dev-a"]["learn_samples"] == 12
    assert devices["dev-a"]["first_seq"] == devices["dev-a"]["last_seq"] == 42
    assert devices["dev-a"]["infer_samples"] == 4
    assert devices["dev-a"]["dropped"] == {"bad_length": 1, "bad_label": 1}
    assert devices["dev-b"]["dropped"] == {"non_finite": 1, "bad_type": 1}
    assert devices["(none)"]["dropped"] == {"bad_format": 1, "bad_device": 1}
    assert summary["records"] == len(rows) - 1  # the blank line is no record
    assert summary["delivery"]["unanswered"] == {"dev-a": [42], "dev-b": [1]}
    assert devices["dev-a"]["answers"]["unanswered"] == [42]


async def test_a_recorded_file_is_windowed_by_its_own_time(
    mosquitto: Mosquitto, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    path = tmp_path / "day.jsonl"
    # three windows of 60 s from t=0: [0, 60), [60, 120), [120, 180)
    times = [0, 10, 59, 60, 61, 150]
    path.write_bytes(lines(line("dev-a", i, 1, t=t) for i, t in enumerate(times)))
    client, listener, task = await listening(mosquitto.url)
    try:
        proc = await bridge_proc(
            *("--broker", str(mosquitto.url), "--from", str(path), "--device", "dev-a"),
            *("--status-wait", "0.2", "--json", "--drain-timeout", "0.5"),
        )
        summary = await finish(proc, unanswered="dev-a: 1-3")  # no node runs
        await listener.wait(batches=3)
    finally:
        await stop_listening(client, task)
    got = [(b.seq, len(b.y), b.t) for _, b in listener.batches]
    assert got == [(1, 3, 59.0), (2, 2, 61.0), (3, 1, 150.0)]
    assert summary["devices"]["dev-a"]["batches"] == 3


async def test_csv_with_a_header(
    mosquitto: Mosquitto, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    path = tmp_path / "samples.csv"
    header = ["node", "label", *(f"x{i}" for i in range(1024))]
    rows = [",".join(header)]
    for i in range(5):
        label = "" if i == 4 else str(i)
        rows.append(",".join([f"dev-{i % 2}", label, *map(str, image(i))]))
    rows.append(",".join(["dev-0", "3", "nan", *map(str, image(9)[1:])]))
    rows.append("dev-0,3,1,2")
    path.write_bytes(lines(rows))
    client, listener, task = await listening(mosquitto.url)
    try:
        proc = await bridge_proc(
            *("--broker", str(mosquitto.url), "--from", str(path), "--device-field", "node"),
            *("--label-field", "label", "--status-wait", "0.2", "--json", "--drain-timeout", "0"),
        )
        summary = await finish(proc, unanswered="dev-0: 1; dev-1: 1")  # no node runs
        await listener.wait(batches=2, infers=1)
    finally:
        await stop_listening(client, task)
    batches = dict(listener.batches)
    assert batches["dev-0"].y.tolist() == [0, 2] and batches["dev-1"].y.tolist() == [1, 3]
    np.testing.assert_array_equal(batches["dev-1"].x[1].ravel(), image(3))
    assert listener.infers[0][0] == "dev-0" and len(listener.infers[0][1].x) == 1
    assert summary["devices"]["dev-0"]["dropped"] == {"non_finite": 1}
    assert summary["devices"]["(none)"]["dropped"] == {"bad_format": 1}  # cells != header


async def test_a_csv_header_without_the_model_columns_is_an_error(
    mosquitto: Mosquitto, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    path = tmp_path / "short.csv"
    path.write_text("device,y,x0,x1\na,1,2,3\n")
    proc = await bridge_proc("--broker", str(mosquitto.url), "--from", str(path),
                             "--device-field", "device")  # fmt: skip
    async with asyncio.timeout(60):
        _, err = await proc.communicate()
    assert proc.returncode == 1
    assert "2 sample columns x0.., the model takes 1024" in err.decode()


async def test_an_mqtt_topic_becomes_batches_and_inference(
    mosquitto: Mosquitto, default_bundle: ModelBundle
) -> None:
    url = mosquitto.url
    source = f"mqtt://127.0.0.1:{url.port}/sensors/+/reading"
    async with aiomqtt.Client(**url.client_kwargs()) as sensor:
        # a retained reading the bridge drops: it gets it when it subscribes, and says so
        await sensor.publish("sensors/probe/reading", "{probe", qos=1, retain=True)
    client, listener, task = await listening(url)
    proc = await bridge_proc(
        *("--broker", str(url), "--from", source, "--window", "1.5", "--status-wait", "0.2"),
        "--json",
    )
    try:
        await wait_for_line(proc, "dropped (bad_format) probe", timeout_s=60)  # it subscribed
        async with aiomqtt.Client(**url.client_kwargs()) as sensor:
            for i in range(4):
                body = json.dumps({"x": image(i), "y": i}) if i < 3 else "{garbage"
                await sensor.publish("sensors/dev-m/reading", body, qos=1)
            raw = struct.pack("<1024f", *image(7))
            await sensor.publish("sensors/dev-r/reading", raw, qos=1)
            await sensor.publish("sensors/bad id/reading", raw, qos=1)
        await listener.wait(batches=1, infers=1)  # the windows close on the wall clock
        assert proc.returncode is None
    finally:
        proc.send_signal(signal.SIGINT)
        summary = await finish(proc)
        await stop_listening(client, task)
    (device, batch), = listener.batches  # fmt: skip
    assert device == "dev-m" and batch.y.tolist() == [0, 1, 2] and batch.seq == 1
    (device, infer), = listener.infers  # fmt: skip
    assert device == "dev-r" and infer.x.reshape(-1).tolist() == image(7)
    assert summary["devices"]["dev-m"]["dropped"] == {"bad_format": 1}
    assert summary["devices"]["(none)"]["dropped"] == {"bad_device": 1}
    assert summary["devices"]["probe"]["dropped"] == {"bad_format": 1}


async def test_follow_picks_up_appended_lines_and_truncation(
    mosquitto: Mosquitto, default_bundle: ModelBundle, tmp_path: Path
) -> None:
    path = tmp_path / "live.jsonl"
    path.write_bytes(lines([line("dev-f", 0, 1)]))
    client, listener, task = await listening(mosquitto.url)
    proc = await bridge_proc(
        *("--broker", str(mosquitto.url), "--from", str(path), "--follow"),
        *("--device-field", "device", "--window", "1", "--status-wait", "0.2", "--json"),
    )
    try:
        await listener.wait(batches=1)
        with path.open("ab") as f:
            f.write(lines([line("dev-f", 1, 2), line("dev-f", 2, 3)]))
        await listener.wait(batches=2)
        path.write_bytes(lines([line("dev-f", 3, 4)]))  # truncated and rewritten
        await listener.wait(batches=3)
        path.rename(tmp_path / "live.jsonl.1")  # rotated: the old file's tail, then the new one
        with (tmp_path / "live.jsonl.1").open("ab") as f:
            f.write(lines([line("dev-f", 4, 5)]))
        path.write_bytes(lines([line("dev-f", 5, 6)]))
        async with asyncio.timeout(20):
            while sum(len(b.y) for _, b in listener.batches) < 6:
                listener.arrived.clear()
                await listener.arrived.wait()
    finally:
        proc.send_signal(signal.SIGTERM)
        summary = await finish(proc)
        await stop_listening(client, task)
    got = [(b.seq, b.y.tolist()) for _, b in listener.batches]
    assert got[:3] == [(1, [1]), (2, [2, 3]), (3, [4])]
    assert [y for _, ys in got[3:] for y in ys] == [5, 6]
    assert [seq for seq, _ in got] == list(range(1, len(got) + 1))
    assert summary["devices"]["dev-f"]["learn_samples"] == 6


async def test_bad_options_exit_2(tmp_path: Path) -> None:
    for args in (
        ["--from", "-"],  # no device
        ["--from", "-", "--device", "a", "--device-field", "d"],
        ["--from", "-", "--device", "a", "--follow"],
        ["--from", str(tmp_path / "missing.jsonl"), "--device", "a"],
        ["--from", "mqtt://127.0.0.1:1/", "--device", "a"],
        ["--from", "-", "--device", "a b"],
        ["--from", "-", "--device", "a", "--window", "0"],
    ):
        proc = await bridge_proc(*args)
        async with asyncio.timeout(30):
            _, err = await proc.communicate()
        assert proc.returncode == 2, (args, err.decode())


async def test_a_piped_file_reaches_a_running_node_and_predictions_come_back(
    mosquitto: Mosquitto, default_bundle: ModelBundle, digits_nic: Any, tmp_path: Path
) -> None:
    """The issue's "done when": JSON lines piped into ``vega-emu bridge`` reach a node as a batch
    and an inference request; its telemetry and prediction come back."""
    from dataset_stream.protocol import Prediction, Telemetry
    from device.learning.nn import SGDConfig
    from device.node.node import Node
    from device.node.settings import NodeSettings

    url = mosquitto.url
    device = "node-live"
    event = digits_nic.events(device)[0]
    xs, ys = event.x, event.y
    rows = [  # nested lists as the model's shape, then flat ones
        json.dumps({"device": device, "x": x.tolist(), "y": int(y)})
        for x, y in zip(xs[:40], ys[:40], strict=True)
    ]
    rows += [json.dumps({"device": device, "x": x.ravel().tolist()}) for x in xs[40:45]]
    settings = NodeSettings(device, tmp_path / "state", sgd=SGDConfig(learning_rate=0.05))
    async with (
        Node(settings, default_bundle, url),
        aiomqtt.Client(**url.client_kwargs()) as watcher,
    ):
        await watcher.subscribe([(f"vega/{device}/telemetry", 1), (f"vega/{device}/prediction", 1)])
        proc = await bridge_proc(
            *("--broker", str(url), "--from", "-", "--device-field", "device", "--json"),
            stdin=True,
        )
        summary = await finish(proc, lines(rows))
        answers: dict[str, Any] = {}
        async with asyncio.timeout(60):
            async for message in watcher.messages:
                assert isinstance(message.payload, bytes)
                kind = message.topic.value.rsplit("/", 1)[1]
                reader = Telemetry if kind == "telemetry" else Prediction
                answers[kind] = reader.from_json(message.payload)
                if len(answers) == 2:
                    break
    assert summary["devices"][device]["learn_samples"] == 40
    assert summary["devices"][device]["infer_samples"] == 5
    assert summary["delivery"]["complete"] and summary["delivery"]["learned"] == 1
    telemetry, prediction = answers["telemetry"], answers["prediction"]
    assert telemetry.seq == 1 and telemetry.samples == 40
    assert len(prediction.classes) == 5 and all(0 <= c < 10 for c in prediction.classes)
    assert prediction.energy_j["total"] > 0
