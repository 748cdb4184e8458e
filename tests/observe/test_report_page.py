"""The report reads as people read: units they think in, axes without offsets, integer counts,
the run's name and date, its configuration as a table, duplicates apart from errors.

Recordings are made by the real recorder; every plot's figure is inspected as it was saved
(``render_report(..., on_figure=...)``), after matplotlib drew its ticks.
"""

from __future__ import annotations

import html
import io
import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from matplotlib.figure import Figure

from dataset_stream.protocol import ErrorMessage
from device.observe import report_text as text
from device.observe.recorder import RunRecorder, load_run
from device.observe.report import render_report
from device.observe.report_plots import PlainFormatter, histogram_range, tick_decimals
from tests.support.messages import BATTERY_J, draining_telemetry
from tests.support.times import T0

#: 2026-12-07 04:11:55 UTC
STARTED = 1_796_616_715.0
RUN_NAME = "20261207-041155"
#: What ``vega-emu up`` stores (speed as typed; events None: all of the scenario).
UP_CONFIG: dict[str, Any] = {
    "devices": 6,
    "dataset": "digits",
    "scenario": "nic",
    "events": None,
    "speed": "max",
    "cadence": 60.0,
    "infer_rate": 0.0,
    "model": "default-v1",
    "lr_size": 1500,
    "class_balanced": False,
    "learning_rate": 0.05,
}
#: Axes of counts, per plot: their ticks must be whole numbers.
COUNT_AXES = {"accuracy.png": "x", "lifetime_final.png": "y", "lag.png": "y", "errors.png": "x"}


def up_recording(
    tmp_path: Path, *, speed: str = "max", depleted: bool = False, events: int = 10
) -> Path:
    """A run as ``vega-emu up`` records it: batteries a hair below full (the state of charge and
    lifetimes that drew offset axes: 99.998 %, ~10,900 h), node-0002 draining fastest, with
    ``depleted`` node-0004 running out at seq 9; a re-run's duplicates and one error. Paced runs'
    telemetry arrives 0.5 s after its batch was due."""
    path = tmp_path / RUN_NAME / "run.sqlite"
    path.parent.mkdir()
    config = UP_CONFIG | {"speed": speed}
    pace = text.pace_of({"config": config}).speed
    with RunRecorder(path, meta={"command": "up", "config": config, "started": STARTED}) as rec:
        for seq in range(1, events + 1):
            for index in range(6):
                device = f"node-{index:04d}"
                drain = 0.06 + 0.001 * index
                if index == 2:
                    drain = 0.5
                elif index == 4 and depleted:
                    drain = 4000.0  # empty after seq 9: 39,204 J / 4,000 J
                empty = drain * (seq + 1) >= BATTERY_J
                tel = draining_telemetry(
                    device,
                    seq,
                    drain_j=drain,
                    accuracy=0.2 + 0.03 * seq,
                    state="depleted" if empty else "learning",
                )
                first_t = T0 + 60.0  # seq 1: the stream's start
                due = first_t + (tel.t - first_t) / pace if pace else tel.t - 3000.0 + 5 * seq
                rec.add(device, tel, due + 0.5)
        for seq in (1, 2, 3):  # a re-run sent seqs 1..3 again to two nodes
            for device in ("node-0000", "node-0001"):
                rec.add(
                    device, ErrorMessage(device, "duplicate", "seq learned before", seq=seq), T0
                )
        rec.add("node-0003", ErrorMessage("node-0003", "bad_shape", "x is [3, 9]", seq=4), T0)
    return path


def render(run: Path, out: Path) -> tuple[str, dict[str, Figure]]:
    figures: dict[str, Figure] = {}
    index = render_report(run, out, on_figure=figures.__setitem__)
    return index.read_text(encoding="utf-8"), figures


def table(page: str, table_id: str) -> list[list[str]]:
    """The cells of the table ``table_id``, row by row, as text."""
    body = page.split(f"id='{table_id}'>", 1)[1].split("</table>", 1)[0]
    return [
        [html.unescape(re.sub(r"<[^>]+>", "", c)) for c in re.findall(r"<t[hd]>(.*?)</t[hd]>", row)]
        for row in re.findall(r"<tr>(.*?)</tr>", body)
    ]


def totals(page: str) -> dict[str, str]:
    return {k: v for k, v in table(page, "totals")}


def number_axes(fig: Figure) -> list[tuple[str, Any]]:
    return [
        (name, axis)
        for ax in fig.axes
        for name, axis in (("x", ax.xaxis), ("y", ax.yaxis))
        if axis.get_scale() == "linear" and not axis.get_converter()  # not bar names
    ]


def visible_ticks(axis: Any) -> np.ndarray:
    low, high = sorted(axis.get_view_interval())
    ticks = np.asarray(axis.get_majorticklocs(), dtype=np.float64)
    return ticks[(ticks >= low - 1e-9) & (ticks <= high + 1e-9)]


def offset_problems(figures: dict[str, Figure]) -> list[str]:
    """Every number axis that uses an offset or scientific notation, or ticks counts between
    whole numbers."""
    problems = []
    for name, fig in figures.items():
        for which, axis in number_axes(fig):
            formatter = axis.get_major_formatter()
            if formatter.get_offset():
                problems.append(f"{name} {which}: offset {formatter.get_offset()!r}")
            for label in axis.get_ticklabels():
                if re.search(r"\de[+-]?\d|×|\$", label.get_text()):
                    problems.append(f"{name} {which}: tick {label.get_text()!r}")
            if COUNT_AXES.get(name) == which:
                ticks = visible_ticks(axis)
                if ticks.size == 0 or not np.all(ticks == np.round(ticks)):
                    problems.append(f"{name} {which}: count ticks {ticks.tolist()}")
    return problems


# -- the page ----------------------------------------------------------------------------------


def test_no_plot_uses_offset_notation_or_fractional_counts(tmp_path: Path) -> None:
    for speed, depleted in (("max", False), ("10", False), ("max", True)):
        where = tmp_path / f"{speed}-{depleted}"
        where.mkdir()
        run = up_recording(where, speed=speed, depleted=depleted)
        _, figures = render(run, where / "report")
        assert set(figures) >= {"accuracy.png", "soc.png", "lifetime.png", "lifetime_final.png"}
        assert offset_problems(figures) == []
        for name, fig in figures.items():
            for _, axis in number_axes(fig):
                assert isinstance(axis.get_major_formatter(), PlainFormatter), name


def test_the_check_catches_what_matplotlib_does_by_default() -> None:
    """The inspection above is not vacuous: matplotlib's own formatter on a state of charge
    near full draws an offset, and a histogram of four devices ticks at halves."""
    soc, hist = Figure(), Figure()
    soc.add_subplot().plot([0, 1], [0.999985, 0.999999])
    hist.add_subplot().hist([1.0, 2.0, 2.0, 3.0])  # counts 1 and 2: ticks every 0.25
    for fig in (soc, hist):
        fig.savefig(io.BytesIO(), format="png")  # draws the ticks, as the report's savefig does
    problems = offset_problems({"soc.png": soc, "lifetime_final.png": hist})
    assert any("offset" in p for p in problems) and any("count ticks" in p for p in problems)


def test_title_names_the_run_and_its_date(tmp_path: Path) -> None:
    page, _ = render(up_recording(tmp_path), tmp_path / "report")
    title = f"vega-emu run {RUN_NAME}, 2026-12-07 04:11 UTC"
    assert f"<title>{title}</title>" in page and f"<h1>{title}</h1>" in page
    assert "run.sqlite</h1>" not in page
    assert "Recorded by <code>vega-emu up</code>, 6 devices, closed loop" in page


def test_configuration_is_a_table(tmp_path: Path) -> None:
    page, _ = render(up_recording(tmp_path), tmp_path / "report")
    rows = {key: (label, value) for label, value, key in table(page, "config")[1:]}
    assert rows["events"] == ("learning events per device", "all of the scenario")
    assert rows["speed"][1].startswith("max (closed loop")
    assert rows["class_balanced"][1] == "no" and rows["lr_size"][1] == "1500"
    assert rows["cadence"] == ("simulated seconds between events", "60")
    assert "None" not in page and "{'" not in page and "&#x27;events" not in page


def test_state_of_charge_in_percent_and_lifetimes_in_days(tmp_path: Path) -> None:
    run = up_recording(tmp_path)
    page, figures = render(run, tmp_path / "report")
    tel = load_run(run).telemetry
    row = totals(page)
    assert re.fullmatch(r"99\.99\d* %", row["median final state of charge"])
    median_h = float(np.median(tel.lifetime_h[tel.seq == 10]))
    assert median_h > 10_000  # ~450 days: given in days and in hours
    assert row["median final projected lifetime"] == text.lifetime(median_h)
    assert re.fullmatch(r"4\d\d\.\d d \(\d\d,\d{3} h\)", row["median final projected lifetime"])
    assert row["simulated time covered"] == "9 min"
    soc = figures["soc.png"].axes[0]
    assert soc.get_ylabel() == "state of charge (%)"
    low, high = soc.get_ylim()
    assert 99.9 < low < high <= 100  # zoomed on the charge used, never above full
    labels = [t.get_text() for t in soc.yaxis.get_ticklabels() if t.get_text()]
    assert labels and all(re.fullmatch(r"\d{1,3}(\.\d+)?", label) for label in labels)
    assert figures["lifetime.png"].axes[0].get_ylabel() == "projected lifetime (days)"
    assert "(days)" in figures["lifetime_final.png"].axes[0].get_xlabel()


def test_duplicates_are_counted_apart_from_errors(tmp_path: Path) -> None:
    page, figures = render(up_recording(tmp_path), tmp_path / "report")
    row = totals(page)
    assert row["errors"] == "1"
    assert row["duplicates (seqs learned before, sent again)"] == "6"
    assert "6 duplicates from 2 devices, not counted as errors" in page
    assert "<td>duplicate</td>" not in page  # not a row of the errors table
    bars = figures["errors.png"].axes[0]
    assert [t.get_text() for t in bars.get_yticklabels()] == ["bad_shape"]


def test_first_nodes_to_die_depleted_first_then_lowest_lifetime(tmp_path: Path) -> None:
    page, _ = render(up_recording(tmp_path, depleted=True), tmp_path / "report")
    rows = table(page, "first-to-die")
    assert rows[0][:4] == ["device", "state", "projected lifetime", "in hours"]
    assert [r[0] for r in rows[1:3]] == ["node-0004", "node-0002"]
    assert rows[1][1:4] == ["depleted after 8 min", "0 d", "0 h"]  # seq 9: 8 min after seq 1
    assert re.fullmatch(r"[\d.,]+ d", rows[2][2]) and rows[2][3].endswith(" h")
    assert rows[2][4].endswith(" %")
    assert "Every node, first to die first" in page


def test_a_closed_loop_run_has_no_lag_plot(tmp_path: Path) -> None:
    page, figures = render(up_recording(tmp_path), tmp_path / "report")
    assert "lag.png" not in figures and "lag.png" not in page
    assert "Not shown: this run was a closed loop" in page


def test_a_paced_run_shows_its_lag_behind_the_schedule(tmp_path: Path) -> None:
    page, figures = render(up_recording(tmp_path, speed="10"), tmp_path / "report")
    assert "lag.png" in figures
    assert "Median 0.5 s, p99 0.5 s" in page  # arrived 0.5 s after due, at 10x real time
    assert "paced at 10 times real time" in page
    assert figures["lag.png"].axes[0].get_xlabel() == "lag behind the schedule (s)"


# -- words and numbers ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fraction", "expected"),
    [(0.999985, "99.9985 %"), (1.0, "100 %"), (0.452, "45.2 %"), (0.9999999, "99.9999 %")],
)
def test_percent(fraction: float, expected: str) -> None:
    assert text.percent(fraction) == expected


def test_lifetimes_and_durations() -> None:
    assert text.lifetime(10_959.08) == "456.6 d (10,959 h)"
    assert text.lifetime(20.5) == "0.85 d (20.5 h)"
    assert text.lifetime(5_268_051) == "219,502 d (5,268,051 h)"
    assert text.lifetime(math.nan) == "-"
    assert text.duration(0.15) == "9 min"
    assert text.duration(30) == "30.0 h"
    assert text.duration(96) == "4.00 d (96.0 h)"


def test_config_values_for_reading() -> None:
    assert text.value_text("events", None) == "all of the scenario"
    assert text.value_text("state_dir", None) == "-"
    assert text.value_text("speed", "1") == "1 (real time)"
    assert text.value_text("speed", 20.0) == "20 times real time"
    assert text.value_text("classes", [1, 2]) == "[1, 2]"
    assert text.value_text("x", {"b": 1, "a": None}) == '{"a": null, "b": 1}'


def test_pace_and_name_of_a_recording(tmp_path: Path) -> None:
    assert text.pace_of({"config": {"speed": "max"}}).closed_loop
    assert text.pace_of({"config": {"speed": "2.5"}}).speed == 2.5
    assert not text.pace_of({"command": "monitor"}).known  # a monitor does not know the pace
    assert text.run_name(tmp_path / "20261207-041148" / "run.sqlite") == "20261207-041148"
    assert text.run_name(tmp_path / "baseline.sqlite") == "baseline"
    with pytest.raises(ValueError, match="positive"):
        text.Pace(speed=0.0, closed_loop=False)


def test_tick_decimals_tell_ticks_apart() -> None:
    assert tick_decimals(np.array([0.0, 5.0, 10.0])) == 0
    assert tick_decimals(np.array([0.0, 0.25, 0.5])) == 2
    assert tick_decimals(np.array([99.9986, 99.9988, 99.999])) == 4
    formatter = PlainFormatter()
    formatter.set_locs([10_000.0, 10_500.0, 11_000.0])
    assert formatter(10_500.0) == "10,500" and formatter.get_offset() == ""
    formatter.set_locs([-0.5, 0.0, 0.5])
    assert formatter(-1e-17) == "0.0"


def test_a_histogram_of_equal_lifetimes_has_one_bar_not_a_spread() -> None:
    values = np.array([456.1, 456.6, 456.6, 456.6])
    low, high = histogram_range(values)
    assert high - low == pytest.approx(0.05 * 456.6) and low < 456.1 and high > 456.6
    spread = np.array([10.0, 50.0, 400.0])
    assert histogram_range(spread) == (10.0, 400.0)
