"""``vega-emu plan`` and the sweep behind it: rows, accuracy matching, CSV and PNG outputs."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from dataset_stream.protocol import DeviceSummary, RunSummary, StreamSummary
from device.cli import app
from device.energy import CostConfig, attach_accuracy, load_profile, summary_accuracy, sweep
from device.model.mobilenet import mobilenet_v1_layers

VEGA = load_profile("vega")


def _rows():
    return sweep(
        lambda layer: mobilenet_v1_layers(lr_layer=layer),
        VEGA,
        CostConfig(),
        lr_layers=[23, 27],
        lr_sizes=[750, 1500],
        lr_bits=[7, 8],
        rates=[1.0, 4.0],
    )


def test_sweep_covers_every_combination() -> None:
    rows = _rows()
    assert len(rows) == 2 * 2 * 2 * 2
    keys = {(r.lr_layer, r.lr_size, r.lr_bits, r.events_per_hour) for r in rows}
    assert len(keys) == 16
    for row in rows:
        assert row.lifetime_h > 0 and row.accuracy is None
        assert row.sustainable == (row.events_per_hour <= row.max_events_per_hour)
    by_rate = {r.events_per_hour: r.lifetime_h for r in rows if r.lr_layer == 27}
    assert by_rate[1.0] > by_rate[4.0]


def run_summary(accuracies: list[float | None], config: dict[str, object]) -> RunSummary:
    """A run summary as ``vega-emu up --summary-json`` writes it."""
    devices = tuple(
        DeviceSummary(
            device=f"node-{i:04d}",
            events=5,
            accuracy=acc,
            accuracy_first_event=None,
            accuracy_factory_classes=None,
            accuracy_new_classes=None,
            energy_j=1.0,
            lifetime_h=100.0,
            soc=0.9,
            state="idle",
            errors=0,
        )
        for i, acc in enumerate(accuracies)
    )
    return RunSummary(devices, StreamSummary(5, 5, 0, 1.0), config=config)


def test_accuracy_matches_by_config() -> None:
    summary = run_summary([0.6, 0.8], {"lr_size": 1500, "lr_bits": 8, "epochs": 4})
    assert summary_accuracy(summary) == ({"lr_size": 1500.0, "lr_bits": 8.0}, pytest.approx(0.7))
    rows = attach_accuracy(_rows(), [summary])
    matched = [r for r in rows if r.accuracy is not None]
    assert len(matched) == 4  # both layers, both rates
    assert all(r.lr_size == 1500 and r.lr_bits == 8 for r in matched)
    assert summary_accuracy(run_summary([None], {})) is None
    with pytest.raises(ValueError, match="lr_bits"):
        summary_accuracy(run_summary([0.5], {"lr_bits": "eight"}))


def test_plan_command_writes_csv_and_png(tmp_path: Path) -> None:
    summary = tmp_path / "run.json"
    summary.write_text(run_summary([0.5], {"lr_size": 750, "lr_bits": 8, "lr_layer": 27}).to_json())
    out_csv, out_png = tmp_path / "plan.csv", tmp_path / "plan.png"
    args = ["plan", "--lr-layers", "25,27", "--lr-sizes", "750", "--lr-bits", "8,32"]
    args += [
        "--rates",
        "1",
        "--summary",
        str(summary),
        "--csv",
        str(out_csv),
        "--plot",
        str(out_png),
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    with out_csv.open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 4
    assert {"lr_layer", "lr_memory_bytes", "lifetime_h", "accuracy", "fits"} <= set(rows[0])
    measured = [r for r in rows if r["accuracy"]]
    assert [(r["lr_layer"], r["lr_bits"]) for r in measured] == [("27", "8")]
    assert out_png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "plan on vega" in result.stdout


def test_plan_rejects_a_summary_that_is_not_one(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"devices": [{"device": "node-0000", "accuracy": 0.5}]}))
    result = CliRunner().invoke(
        app, ["plan", "--summary", str(bad), "--csv", str(tmp_path / "p.csv")]
    )
    assert result.exit_code == 2
    assert "bad.json" in result.output and "Traceback" not in result.output


def test_plan_rejects_bad_lists(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["plan", "--lr-sizes", "many", "--csv", str(tmp_path / "x")])
    assert result.exit_code == 2
