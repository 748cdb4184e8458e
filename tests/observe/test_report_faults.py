"""The report's fault timeline (device.observe.report_faults): faults by kind over simulated
time and their counts, from a recording made by the real recorder; bounded for a big fleet.
"""

from __future__ import annotations

import html
import re
from pathlib import Path

import numpy as np
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from PIL import Image

from dataset_stream.protocol import FaultReport
from device.observe.recorder import FLUSH_EVERY_ROWS, RunRecorder, load_run
from device.observe.report import render_report
from device.observe.report_faults import MAX_MARKS_PER_KIND
from tests.support.messages import draining_telemetry
from tests.support.times import T0

#: (device, kind, fired_s, duration_s) of the faults of the small fleet.
FAULTS = [
    ("node-0001", "crash", 30.0, None),
    ("node-0001", "crash", 7200.0, None),
    ("node-0002", "crash", 3600.0, None),
    ("node-0003", "network", 0.0, 1800.0),
    ("node-0000", "capacity_loss", 3600.0, None),
]


def report(device: str, kind: str, fired_s: float, duration_s: float | None, n: int) -> FaultReport:
    return FaultReport(
        device=device, kind=kind, index=0, n=n, at_s=fired_s, fired_s=fired_s, duration_s=duration_s
    )


def recording(path: Path, devices: int, faults: list[tuple[str, str, float, float | None]]) -> Path:
    with RunRecorder(path, meta={"command": "up"}) as recorder:
        for seq in range(3):
            for index in range(devices):
                device = f"node-{index:04d}"
                tel = draining_telemetry(device, seq, drain_j=2.0, accuracy=0.5)
                recorder.add(device, tel, tel.t + 0.2)
        for n, fault in enumerate(faults):
            recorder.add_fault(report(*fault, n), T0)
    return path


def render(run: Path, out: Path) -> tuple[str, dict[str, Figure]]:
    figures: dict[str, Figure] = {}
    index = render_report(run, out, on_figure=figures.__setitem__)
    return index.read_text(encoding="utf-8"), figures


def table(page: str, table_id: str) -> list[list[str]]:
    body = page.split(f"id='{table_id}'>", 1)[1].split("</table>", 1)[0]
    return [
        [html.unescape(c) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def marks(fig: Figure) -> dict[str, np.ndarray]:
    """The x of every mark drawn, by the kind of its row."""
    ax = fig.axes[0]
    names = [label.get_text() for label in ax.get_yticklabels()]
    out: dict[str, np.ndarray] = {}
    for collection in ax.collections:
        if isinstance(collection, PathCollection):
            offsets = np.asarray(collection.get_offsets())
            out[names[int(offsets[0, 1])]] = offsets[:, 0]
    return out


def test_faults_by_kind_over_simulated_time_and_their_counts(tmp_path: Path) -> None:
    page, figures = render(recording(tmp_path / "run.sqlite", 4, FAULTS), tmp_path / "report")
    assert "<img src='faults.png'" in page
    with Image.open(tmp_path / "report" / "faults.png") as image:
        image.verify()
    assert "5 faults injected into 4 of 4 devices" in page
    assert re.search(r"<th>injected faults</th><td>5</td>", page)
    assert table(page, "faults") == [
        ["kind", "faults", "devices", "first", "last"],
        ["crash", "3", "2", "30 s", "2.0 h"],
        ["capacity_loss", "1", "1", "1.0 h", "1.0 h"],
        ["network", "1", "1", "0 s", "0 s"],
    ]
    drawn = marks(figures["faults.png"])
    assert sorted(drawn) == ["capacity_loss", "crash", "network"]
    np.testing.assert_allclose(drawn["crash"], [30 / 3600, 1.0, 2.0])  # simulated hours
    assert "drawn (at most" not in page  # every fault is drawn


def test_a_run_without_faults_says_so_in_one_line(tmp_path: Path) -> None:
    page, figures = render(recording(tmp_path / "run.sqlite", 2, []), tmp_path / "report")
    section = page.split("<h2>Injected faults</h2>", 1)[1].split("</section>", 1)[0]
    assert section == "<p>No faults were injected in this run.</p>"
    assert "faults.png" not in figures


def test_a_big_fleet_draws_a_bounded_sample_and_counts_everything(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    faults: list[tuple[str, str, float, float | None]] = [
        (f"node-{int(rng.integers(0, 50)):04d}", kind, float(rng.uniform(0, 4 * 86400)), None)
        for kind, count in (("crash", 3 * MAX_MARKS_PER_KIND), ("clock_jump", 7))
        for _ in range(count)
    ]
    page, figures = render(recording(tmp_path / "run.sqlite", 50, faults), tmp_path / "report")
    drawn = marks(figures["faults.png"])
    assert len(drawn["crash"]) == MAX_MARKS_PER_KIND
    assert len(drawn["clock_jump"]) == 7
    crash_days = sorted(f[2] / 86400 for f in faults if f[1] == "crash")
    # the first and last are kept
    np.testing.assert_allclose(drawn["crash"][[0, -1]], [crash_days[0], crash_days[-1]])
    assert figures["faults.png"].axes[0].get_xlabel().startswith("simulated days")
    assert f"{MAX_MARKS_PER_KIND + 7:,} of them drawn" in page
    assert table(page, "faults")[1][:2] == ["crash", f"{3 * MAX_MARKS_PER_KIND:,}"]


def test_faults_are_committed_every_so_many_rows_like_messages(tmp_path: Path) -> None:
    """A burst of faults is on disk before the recorder closes (no running loop: no timer)."""
    path = tmp_path / "run.sqlite"
    with RunRecorder(path) as recorder:
        for n in range(FLUSH_EVERY_ROWS):
            recorder.add_fault(report("node-0001", "clock_jump", float(n), None, n), T0)
        assert len(load_run(path).faults) == FLUSH_EVERY_ROWS
