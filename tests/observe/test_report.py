"""Recordings (device.observe.recorder) and their HTML report (device.observe.report, ``vega-emu
report``).

Real messages in, real SQLite, a real SIGKILL, real PNGs opened with PIL.
"""

from __future__ import annotations

import os
import re
import signal
import sqlite3
import stat
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dataset_stream.protocol import ErrorMessage, Status, Telemetry
from device.observe.recorder import (
    NotARecording,
    RecordError,
    RunRecorder,
    UnsupportedRecording,
    iter_messages,
    load_run,
    writer,
)
from device.observe.report import MAX_NODE_LINES, render_report
from tests.support.messages import draining_telemetry
from tests.support.times import T0
from tests.support.wait import wait_until

ROOT = Path(__file__).resolve().parents[2]

Messages = list[tuple[str, Telemetry | Status | ErrorMessage, float]]


def mixed_messages() -> Messages:
    """Every kind of message and optional field, with arrival times."""
    out: Messages = []
    received = T0 + 0.25
    for seq in range(4):
        for index in range(3):
            device = f"node-{index:04d}"
            tel = draining_telemetry(device, seq, drain_j=1.0 + index, accuracy=0.3 + 0.1 * seq)
            out.append((device, tel, received))
            received += 0.5
    extra = Telemetry.from_json(
        {
            **draining_telemetry("node-0002", 4, accuracy=None).to_dict(),
            "lifetime_h": None,
            "accuracy_by_class": {"0": 0.5, "7": 1.0},
            "firmware": "x1",  # a field added by a producer is kept
        }
    )
    out.append(("node-0002", extra, received))
    out.append(("node-0000", Status(state="learning", device="node-0000", t=T0, last_seq=3), 1.0))
    out.append(("node-0001", Status(state="offline"), 2.0))  # a last will: no device field
    out.append(("node-0001", Status(state="error", device="node-0001", reason="store <full>"), 3.0))
    out.append(("node-0000", ErrorMessage("node-0000", "bad_shape", "x is [3, 9]", seq=7), 4.0))
    out.append(("node-0001", ErrorMessage("node-0001", "bad_format", "no seq"), 5.0))
    gap = ErrorMessage("node-0002", "gap", "skipped", gap_first=5, gap_last=6, next_seq=7)
    out.append(("node-0002", gap, 6.0))
    return out


def record_messages(path: Path, messages: Messages, **meta: object) -> None:
    with RunRecorder(path, meta=meta) as recorder:
        for device, message, received in messages:
            recorder.add(device, message, received)


# -- the recording ---------------------------------------------------------------------------


def test_messages_come_back_exactly_as_they_went_in(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    messages = mixed_messages()
    record_messages(path, messages, command="vega-emu up", config={"devices": 3})
    back = list(iter_messages(path))
    assert [(m.device, m.message, m.received) for m in back] == messages
    assert [m.kind for m in back].count("telemetry") == 13
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_load_run_gives_the_figures_as_columns(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    messages = mixed_messages()
    record_messages(path, messages, command="vega-emu up", config={"devices": 3})
    run = load_run(path)
    assert run.meta["command"] == "vega-emu up" and run.meta["config"] == {"devices": 3}
    assert isinstance(run.meta["started"], float)
    assert run.devices == ("node-0000", "node-0001", "node-0002")
    tel = run.telemetry
    assert len(tel) == 13
    sent = sorted(
        (m for d, m, _ in messages if isinstance(m, Telemetry)), key=lambda m: (m.device, m.t)
    )
    assert [run.devices[i] for i in tel.device] == [m.device for m in sent]
    np.testing.assert_array_equal(tel.seq, [m.seq for m in sent])
    np.testing.assert_array_equal(tel.t, [m.t for m in sent])
    np.testing.assert_array_equal(tel.soc, [m.battery.soc for m in sent])
    np.testing.assert_array_equal(tel.remaining_j, [m.battery.remaining_j for m in sent])
    for phase in ("frozen", "adaptive", "memory", "idle", "total"):
        np.testing.assert_array_equal(tel.energy_j[phase], [m.energy_j[phase] for m in sent])
    nan = float("nan")
    expected_accuracy = [nan if m.accuracy is None else m.accuracy for m in sent]
    np.testing.assert_array_equal(tel.accuracy, expected_accuracy)  # NaN where null
    np.testing.assert_array_equal(tel.lifetime_h, [m.lifetime_h or nan for m in sent])
    received = {(d, m.seq): r for d, m, r in messages if isinstance(m, Telemetry)}
    np.testing.assert_array_equal(tel.received, [received[(m.device, m.seq)] for m in sent])
    assert [(s.device, s.state, s.reason) for s in run.statuses] == [
        ("node-0000", "learning", None),
        ("node-0001", "offline", None),
        ("node-0001", "error", "store <full>"),
    ]
    assert [(e.device, e.code, e.seq, e.received) for e in run.errors] == [
        ("node-0000", "bad_shape", 7, 4.0),
        ("node-0001", "bad_format", None, 5.0),
        ("node-0002", "gap", None, 6.0),
    ]


def test_a_redelivered_seq_is_recorded_once(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    with RunRecorder(path) as recorder:
        for seq in (0, 1, 1, 2, 0):
            recorder.add("node-0000", draining_telemetry("node-0000", seq), T0 + seq)
        recorder.flush()
        recorder.add("node-0000", draining_telemetry("node-0000", 2), T0)  # in another transaction
    assert recorder.added == 6 and recorder.repeated == 3
    assert list(load_run(path).telemetry.seq) == [0, 1, 2]


def test_an_existing_file_is_refused(tmp_path: Path) -> None:
    recording = tmp_path / "run.sqlite"
    record_messages(recording, mixed_messages()[:2])
    with pytest.raises(RecordError, match="exists \\(a recording\\)"):
        RunRecorder(recording)
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(RecordError, match="exists \\(not a recording\\)"):
        RunRecorder(other)
    assert len(load_run(recording).telemetry) == 2  # untouched
    empty = tmp_path / "empty.sqlite"
    empty.touch()
    with RunRecorder(empty) as recorder:  # an empty file is a new one (e.g. from mkstemp)
        recorder.add("node-0000", draining_telemetry("node-0000", 0), T0)
    assert len(load_run(empty).telemetry) == 1


def test_reading_what_is_not_a_recording_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="no such recording"):
        load_run(tmp_path / "missing.sqlite")
    other = tmp_path / "other.sqlite"
    with sqlite3.connect(other) as db:
        db.execute("CREATE TABLE telemetry (x)")
    with pytest.raises(NotARecording, match="not a vega-emu recording"):
        load_run(other)
    text = tmp_path / "text.sqlite"
    text.write_text("hello" * 100)
    with pytest.raises(NotARecording):
        load_run(text)


def test_metadata_must_be_json(tmp_path: Path) -> None:
    with pytest.raises(RecordError, match="not JSON"):
        RunRecorder(tmp_path / "run.sqlite", meta={"config": object()})
    with pytest.raises(RecordError, match="not JSON"):
        RunRecorder(tmp_path / "run.sqlite", meta={"rate": float("nan")})


def test_a_closed_recorder_refuses_messages(tmp_path: Path) -> None:
    recorder = RunRecorder(tmp_path / "run.sqlite")
    recorder.close()
    recorder.close()  # harmless
    with pytest.raises(RecordError, match="closed"):
        recorder.add("node-0000", draining_telemetry("node-0000", 0), T0)


async def test_rows_are_committed_within_a_second_on_a_running_loop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No flush() call: the loop's timer commits; a reader sees the rows while it records."""
    monkeypatch.setattr(writer, "FLUSH_EVERY_S", 0.2)
    path = tmp_path / "run.sqlite"
    with RunRecorder(path) as recorder:
        recorder.add("node-0000", draining_telemetry("node-0000", 0), T0)
        recorder.add("node-0000", ErrorMessage("node-0000", "gap", "skipped"), T0)
        assert len(load_run(path).telemetry) == 0  # buffered
        await wait_until(  # the timer ticks every 0.2 s; the test reads as any reader would
            lambda: len(load_run(path).telemetry) == 1,
            timeout_s=0.5,
            what="the timer committed the buffered rows",
        )
        run = load_run(path)
        assert len(run.telemetry) == 1 and len(run.errors) == 1


def test_a_recording_survives_sigkill(tmp_path: Path) -> None:
    """Rows flushed before a SIGKILL are all there and the file is sound; unflushed ones are
    lost (at most the last second)."""
    path = tmp_path / "run.sqlite"
    script = textwrap.dedent(
        f"""
        import os, signal
        from pathlib import Path
        from tests.support.messages import draining_telemetry
        from device.observe.recorder import RunRecorder

        recorder = RunRecorder(Path({str(path)!r}), meta={{"command": "kill test"}})
        for seq in range(300):
            recorder.add("node-0000", draining_telemetry("node-0000", seq), 1.0)
        recorder.flush()
        for seq in range(300, 310):  # buffered only
            recorder.add("node-0000", draining_telemetry("node-0000", seq), 1.0)
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -signal.SIGKILL, result.stderr
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    run = load_run(path)
    assert list(run.telemetry.seq) == list(range(300))
    assert run.meta["command"] == "kill test"


# -- the report ------------------------------------------------------------------------------


def fleet_recording(path: Path, devices: int = 12, events: int = 8) -> None:
    """``devices`` nodes; node-0007 drains fastest, so it dies first."""
    rng = np.random.default_rng(0)
    with RunRecorder(path, meta={"command": "vega-emu up <b>--devices</b>"}) as recorder:
        for seq in range(events):
            for index in range(devices):
                device = f"node-{index:04d}"
                drain = 40.0 if index == 7 else 5.0 + index % 5
                acc = float(np.clip(0.2 + 0.08 * seq + rng.normal(0, 0.03), 0, 1))
                message = draining_telemetry(device, seq, drain_j=drain, accuracy=acc)
                recorder.add(device, message, message.t + rng.exponential(0.3))
        recorder.add("node-0003", ErrorMessage("node-0003", "bad_shape", "<script>x</script>"), T0)
        recorder.add("node-0003", ErrorMessage("node-0003", "bad_shape", "again", seq=2), T0)
        recorder.add("node-0004", ErrorMessage("node-0004", "gap", "skipped 3..4"), T0)
        recorder.add("node-0005", Status(state="offline"), T0)


def images_of(index: Path) -> list[str]:
    return re.findall(r"<img src='([^']+)'", index.read_text(encoding="utf-8"))


def first_to_die(index: Path) -> list[str]:
    table = index.read_text(encoding="utf-8").split("id='first-to-die'>", 1)[1].split("</table>")[0]
    return re.findall(r"<tr><td>([^<]+)</td>", table)


def test_report_of_a_fleet(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    fleet_recording(run)
    index = render_report(run, tmp_path / "report")
    assert index == tmp_path / "report" / "index.html"
    images = images_of(index)
    expected = ["accuracy", "soc", "lifetime", "lifetime_final", "energy", "lag", "errors"]
    assert images == [f"{name}.png" for name in expected]
    for name in images:
        with Image.open(index.parent / name) as image:
            image.verify()
            assert image.format == "PNG"
    assert first_to_die(index)[0] == "node-0007"
    assert len(first_to_die(index)) == 10
    page = index.read_text(encoding="utf-8")
    assert "<script>" not in page
    assert "&lt;b&gt;--devices&lt;/b&gt;" in page  # metadata from the file is escaped
    assert "--speed 1" in page  # the lag's caveat
    assert re.search(r"<th>devices</th><td>12</td>", page)
    assert re.search(r"<th>errors</th><td>3</td>", page)
    assert re.search(r"<td>bad_shape</td><td>2</td><td>1</td>", page)


def test_report_of_thousands_of_nodes_samples_the_lines(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    fleet_recording(run, devices=1200, events=2)
    index = render_report(run, tmp_path / "report")
    assert f"{MAX_NODE_LINES} of 1200 nodes drawn" in index.read_text(encoding="utf-8")
    assert first_to_die(index)[0] == "node-0007"


def test_report_of_an_empty_recording_says_what_is_missing(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    RunRecorder(run).close()
    index = render_report(run, tmp_path / "report")
    page = index.read_text(encoding="utf-8")
    assert "No telemetry was recorded" in page and "No errors were recorded" in page
    assert images_of(index) == []


def test_report_without_accuracy_or_lifetime(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    with RunRecorder(run) as recorder:
        for seq in range(3):
            base = draining_telemetry("node-0000", seq, accuracy=None).to_dict()
            recorder.add("node-0000", Telemetry.from_json({**base, "lifetime_h": None}), T0)
    index = render_report(run, tmp_path / "report")
    page = index.read_text(encoding="utf-8")
    assert "No accuracy in the telemetry" in page and "No projected lifetime" in page
    assert images_of(index) == ["soc.png", "energy.png", "lag.png"]
    for name in images_of(index):
        assert (index.parent / name).is_file()


# -- the command -----------------------------------------------------------------------------


def vega_emu(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env=os.environ | {"COLUMNS": "200"},
    )


def test_cli_report_prints_the_page(tmp_path: Path) -> None:
    run = tmp_path / "run.sqlite"
    fleet_recording(run, devices=3, events=3)
    result = vega_emu("report", str(run), "--out", str(tmp_path / "out"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == str(tmp_path / "out" / "index.html")
    assert (tmp_path / "out" / "accuracy.png").is_file()


@pytest.mark.parametrize("case", ["missing", "other-sqlite", "text"])
def test_cli_report_on_a_file_that_is_not_a_recording(tmp_path: Path, case: str) -> None:
    run = tmp_path / "run.sqlite"
    if case == "other-sqlite":
        with sqlite3.connect(run) as db:
            db.execute("CREATE TABLE telemetry (x)")
    elif case == "text":
        run.write_text("not sqlite\n" * 50)
    result = vega_emu("report", str(run), "--out", str(tmp_path / "out"))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    assert ("no such recording" if case == "missing" else "not a vega-emu recording") in lines[0]


def test_a_recording_of_another_format_is_named_as_such(tmp_path: Path) -> None:
    path = tmp_path / "run.sqlite"
    RunRecorder(path).close()
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    db.close()
    with pytest.raises(UnsupportedRecording, match="recording format 99"):
        load_run(path)
    with pytest.raises(RecordError, match="exists \\(a recording\\)"):
        RunRecorder(path)
    with pytest.raises(RecordError, match="exists \\(not a recording\\)"):
        RunRecorder(tmp_path)  # a directory
