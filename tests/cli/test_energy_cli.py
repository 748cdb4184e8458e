"""``vega-emu energy``: JSON contract, every paper LR layer on both profiles, errors."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from device.cli import app
from device.model.default import build_default
from device.model.train import FitConfig

runner = CliRunner()


def _json(*args: str) -> dict:
    result = runner.invoke(app, ["energy", "--json", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


@pytest.mark.parametrize("profile", ["vega", "vega-hw", "stm32l4"])
def test_every_paper_lr_layer_has_the_json_keys(profile: str) -> None:
    started = time.monotonic()
    for layer in range(19, 28):
        args = ["--mobilenet-v1", "--res", "128", "--lr-layer", str(layer), "--profile", profile]
        data = _json(*args)
        event = data["event"]
        assert set(event["latency_s"]) == {"frozen", "adaptive", "total"}
        assert set(event["energy_j"]) == {"frozen", "adaptive", "memory", "total"}
        assert data["lifetime_h"] > 0 and data["max_events_per_hour"] > 0
        assert {"fits", "items", "regions", "warnings"} <= set(data["memory"])
        names = [layer["name"] for layer in data["layers"]]
        assert names[0] == "conv0" and names[-1] == "fc27"
        assert data["config"]["lr_layer"] == layer
    assert time.monotonic() - started < 10


def test_json_agrees_with_the_tables_inputs() -> None:
    data = _json("--lr-layer", "27", "--events-per-hour", "4", "--lr-bits", "6")
    assert data["config"]["lr_bits"] == 6 and data["events_per_hour"] == 4
    energy = data["event"]["energy_j"]
    assert energy["total"] == pytest.approx(
        energy["frozen"] + energy["adaptive"] + energy["memory"]
    )
    per_layer = sum(layer["j"] for layer in data["layers"])
    assert per_layer + energy["memory"] == pytest.approx(energy["total"])
    hours = 39204.0 / data["power_w"] / 3600
    assert data["lifetime_h"] == pytest.approx(hours)


@pytest.mark.parametrize(
    ("profile", "basis", "rate"),
    [("vega", "paper-derived", "118.6"), ("vega-hw", "hardware-bounded", "15.5")],
)
def test_the_frozen_stage_says_where_its_rate_comes_from(
    profile: str, basis: str, rate: str
) -> None:
    data = _json("--lr-layer", "27", "--profile", profile)
    assert data["frozen_stage"]["basis"] == basis
    assert data["frozen_stage"]["int8_mac_per_cycle"] == pytest.approx(float(rate), rel=1e-3)
    result = runner.invoke(app, ["energy", "--lr-layer", "27", "--profile", profile])
    assert result.exit_code == 0, result.output
    assert f"frozen stage: INT8 at {rate} MAC/cycle, {basis}" in result.stdout


def test_tables_render() -> None:
    result = runner.invoke(app, ["energy", "--lr-layer", "19", "--lr-bits", "32"])
    assert result.exit_code == 0, result.output
    for text in ("event totals", "memory map", "does not fit", "lifetime at 1 events/h"):
        assert text in result.stdout


def test_errors_exit_2() -> None:
    bad_profile = runner.invoke(app, ["energy", "--profile", "nope"])
    assert bad_profile.exit_code == 2
    bad_bits = runner.invoke(app, ["energy", "--lr-bits", "12"])
    assert bad_bits.exit_code == 2
    both = runner.invoke(app, ["energy", "--mobilenet-v1", "--model", "."])
    assert both.exit_code == 2


def test_model_bundle(tmp_path: Path) -> None:
    """--model DIR charges the bundle's own layers (the default CNN, LR = input of dw3)."""
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (32, 1, 32, 32), dtype=np.uint8)
    y = rng.integers(0, 3, 32)
    build_default(x, y, tmp_path / "bundle", fit_config=FitConfig(epochs=1))
    data = _json("--model", str(tmp_path / "bundle"), "--lr-size", "200")
    assert data["config"]["lr_layer"] == 3
    adaptive = [layer["name"] for layer in data["layers"] if layer["stage"] == "adaptive"]
    assert adaptive[0] == "dw3"
    assert data["event"]["traffic"]["lr_bytes"] == 32 * 4 * 4 + 8
    wrong = runner.invoke(app, ["energy", "--model", str(tmp_path / "bundle"), "--lr-layer", "5"])
    assert wrong.exit_code == 2
    out_csv = tmp_path / "p.csv"
    args = ["plan", "--model", str(tmp_path / "bundle"), "--csv", str(out_csv)]
    planned = runner.invoke(app, [*args, "--plot", str(tmp_path / "p.png"), "--rates", "60"])
    assert planned.exit_code == 0, planned.output
    assert out_csv.read_text().count("\n") == 1 + 4 * 4
