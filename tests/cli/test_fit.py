"""Every table of the command line at 60, 80 and 120 columns: numbers never cut, never wrapped.

Each table is built from real values (telemetry, a run summary, a bridge report, a plan sweep,
an energy report, the default bundle) and printed at a terminal's width; every cell of its
number columns must then appear whole on one line, no ellipsis may touch a digit and no line
may be wider than the terminal. The commands themselves are run with ``COLUMNS=80``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from rich.table import Table

from broker.url import BrokerURL
from dataset_stream.bridge.tally import BridgeReport, DeviceReport
from dataset_stream.outcome import Delivery
from dataset_stream.protocol import DeviceSummary, RunSummary, StreamSummary
from device.app.energy import AnalysedModel, EnergyReport
from device.cli import _energy_view, bridge_cmd, model_cmd, up_cmd
from device.cli._monitor_view import monitor_table
from device.cli._tables import Col, fit_table
from device.cli._units import hours
from device.energy import CostConfig, PlanRow, load_profile, sweep
from device.model.bundle import ModelBundle
from device.model.info import bundle_report
from device.model.mobilenet import mobilenet_v1_layers
from device.observe.accounting import DeviceRecord
from device.observe.monitor import FleetMonitor
from tests.support.fitted import check_fitted, column_text, hidden_columns, render
from tests.support.messages import draining_telemetry
from tests.support.times import T0

WIDTHS = (60, 80, 120)
#: A device id longer than a table's name column at 60 columns: it wraps, whole.
LONG_ID = "greenhouse-north-row-07-sensor-0042"


def check_table(table: Table, width: int) -> str:
    """Render ``table`` at ``width``: every cell of its number (right-aligned) columns whole on
    a line, nothing cut, nothing wider than ``width``; the text, for more checks."""
    text = render(table, width)
    numbers = [str(c) for col in table.columns if col.justify == "right" for c in col.cells]
    check_fitted(text, width, numbers)
    return text


def _records() -> dict[str, DeviceRecord]:
    """Devices a few events in, lifetimes in the ten thousands of hours."""
    records = {}
    for i, device in enumerate(("node-0000", "node-0001", LONG_ID)):
        rec = DeviceRecord(device)
        for seq in range(3):
            tel = draining_telemetry(device, seq, drain_j=0.064 * (i + 1), accuracy=0.77)
            rec.add_telemetry(tel, received=T0 + 60.0 * seq + 0.25)
        records[device] = rec
    return records


# -- the layout itself ---------------------------------------------------------------------------


def test_a_table_hides_its_least_important_columns_first_and_says_which() -> None:
    cols = [Col("device", "name"), Col("a"), Col("b", hide=1), Col("c", hide=2), Col("d")]
    rows = [["node-0000", "12,345.6", "7.89 ms", "10.2k h", "99.9874%"]]
    wide = render(fit_table(cols, rows, 80), 80)
    assert hidden_columns(wide) == []
    narrow = fit_table(cols, rows, 50)
    text = check_table(narrow, 50)
    assert [c.header for c in narrow.columns] == ["device", "a", "b", "d"]  # c went first
    assert hidden_columns(text) == ["c"]
    tiny = fit_table(cols, rows, 40)
    assert [c.header for c in tiny.columns] == ["device", "a", "d"]
    assert hidden_columns(check_table(tiny, 40)) == ["b", "c"]


def test_names_wrap_whole_and_numbers_keep_their_width() -> None:
    cols = [Col("device", "name"), Col("life h"), Col("why", "text")]
    rows = [[LONG_ID, "10.2k h", "bad shape 3, not a number 2, no label 1"]]
    text = check_table(fit_table(cols, rows, 40), 40)
    assert LONG_ID in column_text(text, 0)  # folded, whole
    assert "…" not in text


def test_legends_follow_the_columns_shown() -> None:
    cols = [Col("n", legend="n: predictions"), Col("x", hide=1, legend="x: something else")]
    rows = [["1" * 30, "2" * 30]]
    assert "x: something else" in render(fit_table(cols, rows, 80), 80)
    narrow = render(fit_table(cols, rows, 40), 40)
    assert "n: predictions" in narrow and "x: something" not in narrow


def test_a_column_needs_a_header_and_rows_their_cells() -> None:
    with pytest.raises(ValueError, match="header"):
        Col(" ")
    with pytest.raises(ValueError, match="hide"):
        Col("a", hide=-1)
    with pytest.raises(ValueError, match="2 cells"):
        fit_table([Col("a")], [["1", "2"]], 80)


# -- each command's tables ----------------------------------------------------------------------


@pytest.mark.parametrize("width", WIDTHS)
def test_up_live_table(width: int) -> None:
    records = _records()
    text = check_table(up_cmd.live_table(records, 9, 9, width), width)
    life = records["node-0000"].telemetry
    assert life is not None and life.lifetime_h is not None
    assert hours(life.lifetime_h) in text and "k h" in text
    assert "node-0000" in text


def _summary(*, scored: bool) -> RunSummary:
    devices = tuple(
        DeviceSummary(
            device=device,
            events=77,
            accuracy=0.772,
            accuracy_first_event=0.097,
            accuracy_factory_classes=0.739,
            accuracy_new_classes=0.785,
            energy_j=energy_j,
            lifetime_h=lifetime_h,
            soc=0.999874,
            state="idle",
            errors=0,
            prequential_accuracy=0.5 if scored else None,
            prequential_n=12_345 if scored else 0,
        )
        for device, energy_j, lifetime_h in (
            ("node-0000", 4.944, 10_174.3),
            ("node-0001", 1.2e6, 5_268_051.0),
            (LONG_ID, 0.0, None),
        )
    )
    return RunSummary(devices, StreamSummary(sent=231, acked=231, rejected=0, wall_s=1))


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("scored", [False, True])
def test_up_summary(width: int, scored: bool) -> None:
    table = up_cmd.summary_table(_summary(scored=scored), width)
    text = check_table(table, width)
    for shown in ("10.2k h", "5.27M h", "1.2 MJ", "4.94 J", "0.772"):
        header = "energy" if shown.endswith("J") else "life h"
        if header not in hidden_columns(text):
            assert shown in text
    headers = [c.header for c in table.columns]
    assert ("preq" in headers) == scored if width == 120 else scored or "preq" not in headers
    if width == 80:  # the terminal: every column but the first accuracy fits
        assert set(hidden_columns(text)) <= {"acc 1st", "new cls", "energy", "factory"}


@pytest.mark.parametrize("width", WIDTHS)
def test_monitor_table(width: int) -> None:
    monitor = FleetMonitor(BrokerURL("127.0.0.1", 1884))
    monitor.devices.update(_records())
    text = check_table(monitor_table(monitor, max_rows=10, width=width), width)
    assert "life h" in text and "SoC" in text  # what the monitor is for: never hidden
    assert "injected" not in text  # no fault, no word of them


@pytest.mark.parametrize("width", WIDTHS)
def test_monitor_table_counts_injected_faults_in_its_caption(width: int) -> None:
    """Injected faults are said under the table (a column would not fit 80 columns)."""
    monitor = FleetMonitor(BrokerURL("127.0.0.1", 1884))
    monitor.devices.update(_records())
    monitor.faults.update({"crash": 5, "network": 2})
    monitor.devices["node-0001"].injected_gaps = 3
    text = check_table(monitor_table(monitor, max_rows=10, width=width), width)
    caption = " ".join(text.split())
    assert "7 faults injected (5 crash, 2 network), 3 of the seqs skipped and 0 of the " in caption
    assert "life h" in text and "SoC" in text


@pytest.mark.parametrize("width", WIDTHS)
def test_bridge_table(width: int) -> None:
    delivered = Delivery(planned=5, sent=5, learned=5)
    row = DeviceReport(
        batches=5,
        learn_samples=12_345,
        infers=3,
        infer_samples=90,
        first_seq=4,
        last_seq=8,
        dropped={"bad_shape": 2, "no_label": 1},
        delivery=delivered,
    )
    devices = {"node-0000": row, "node-0001": row, LONG_ID: row}
    report = BridgeReport(devices=devices, records=37_041, elapsed_s=2.5, delivery=delivered)
    text = check_table(bridge_cmd.report_table(report, width), width)
    assert text.count("4..8") == 3 and text.count("5/5") == 3
    names = column_text(text, 0)
    assert "node-0000" in text and "node-0001" in text and LONG_ID in names  # never node-00…


def _plan_rows() -> list[PlanRow]:
    return sweep(
        lambda layer: mobilenet_v1_layers(lr_layer=layer),
        load_profile("vega"),
        CostConfig(new_per_event=300),
        lr_layers=[19, 21, 23, 25, 27],
        lr_sizes=[375, 750, 1500, 3000],
        lr_bits=[6, 7, 8, 32],
        rates=[0.25, 1, 4],
    )


@pytest.mark.parametrize("width", WIDTHS)
def test_plan_table(width: int) -> None:
    rows = _plan_rows()
    text = check_table(_energy_view.plan_table(rows, "vega", width), width)
    for name in ("LR", "LRs", "bits", "LR MiB"):
        assert name not in hidden_columns(text)
    assert "life @4/h" not in hidden_columns(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_energy_layer_table(width: int) -> None:
    report = EnergyReport.compute(
        mobilenet_v1_layers(lr_layer=19),
        load_profile("vega"),
        CostConfig(new_per_event=300),
        model=AnalysedModel("MobileNet-V1"),
    )
    text = check_table(_energy_view.layer_table(report, width), width)
    assert "depthwise" in text or "kind" in hidden_columns(text)


@pytest.mark.parametrize("width", WIDTHS)
def test_model_info_table(width: int, default_bundle: ModelBundle) -> None:
    report = bundle_report(default_bundle)
    check_table(model_cmd.info_table(report, str(default_bundle.path), width), width)


# -- the commands, as a user in an 80-column terminal runs them ---------------------------------


def _run(*args: str, cwd: Path, columns: int = 80) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "device.cli", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=os.environ | {"COLUMNS": str(columns)},
        cwd=cwd,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout + result.stderr


def test_plan_and_energy_fit_80_columns(tmp_path: Path, default_bundle: ModelBundle) -> None:
    for args in (["plan"], ["energy"], ["energy", "--model", str(default_bundle.path)]):
        text = _run(*args, cwd=tmp_path)
        lines = [line for line in text.splitlines() if not line.startswith("model: ")]
        check_fitted("\n".join(lines), 80)  # the model line is one line: the terminal wraps it
        assert "┏" in text
    info = _run("model", "info", str(default_bundle.path), cwd=tmp_path)
    check_fitted(info, 80, ["19k", "1.96M"])


def test_up_fits_80_columns(tmp_path: Path, default_bundle: ModelBundle) -> None:
    summary = tmp_path / "S.json"
    text = _run(
        "up",
        "--devices",
        "4",
        "--events",
        "3",
        "--no-report",
        "--model",
        str(default_bundle.path),
        "--summary-json",
        str(summary),
        cwd=tmp_path,
    )
    data = json.loads(summary.read_text("utf-8"))
    numbers = []
    for device in data["devices"]:
        numbers += [device["device"], f"{device['accuracy']:.3f}", hours(device["lifetime_h"])]
    check_fitted(text, 80, numbers)
